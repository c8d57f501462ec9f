package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/tenancy"
)

// rewrapStore is what the rewrap command needs of a tenancy store.
type rewrapStore interface {
	tenancy.Store
	loomcrypto.DataKeyRewrapper
}

// runRewrap is the rewrap command, the second step of a master-key rotation: with the new
// master version first in LOOM_MASTER_KEY (or the data directory's master.key) and the old
// ones still after it, it stores every tenant's keys derived from the master versions
// (so rows sealed before envelope encryption open without them) and wraps every data key
// with the current version. Trace rows are not touched. It is safe beside a running server.
// Afterwards the old versions can be removed from the key setting.
func runRewrap(ctx context.Context, args []string, io stdio) error {
	fs := newFlagSet("rewrap")
	dataDir := fs.String("data", or(io.getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory of the SQLite store and master.key (LOOM_DATA_DIR)")
	if err := parseFlags(fs, args, io.stdout, "[flags]",
		"Wrap every tenant data key with the current master key version (the first in LOOM_MASTER_KEY), for DATABASE_URL or the SQLite store in the data directory."); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{errors.New("rewrap takes no arguments")}
	}
	spec := io.getenv("LOOM_MASTER_KEY")
	if spec == "" {
		b, err := readSecretFile(filepath.Join(*dataDir, "master.key"))
		if err != nil {
			return fmt.Errorf("LOOM_MASTER_KEY is not set and the master key file cannot be read: %w", err)
		}
		spec = strings.TrimSpace(string(b))
	}
	keyring, err := loomcrypto.ParseKeyring(spec)
	if err != nil {
		return fmt.Errorf("LOOM_MASTER_KEY: %w", err)
	}
	db, err := openExistingStore(ctx, io.getenv("DATABASE_URL"), *dataDir)
	if err != nil {
		return err
	}
	defer db.close()
	var store rewrapStore
	if db.pool != nil {
		store = tenancy.NewPostgresStore(db.pool)
	} else {
		// The server applies the migrations at start; one that has not run since the
		// upgrade has no key table yet.
		if err := migrations.Up(ctx, db.db, migrations.SQLite); err != nil {
			return err
		}
		store = tenancy.NewSQLiteStore(db.db)
	}
	tenants, err := store.ListTenants(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, len(tenants))
	for i, t := range tenants {
		ids[i] = t.ID
	}
	adopted, err := keyring.AdoptDerivedKeys(ctx, store, ids)
	if err != nil {
		return err
	}
	st, err := keyring.RewrapDataKeys(ctx, store)
	if err != nil {
		return err
	}
	fmt.Fprintf(io.stdout, "master key version %d: %d tenants, %d derived keys stored, %d data keys rewrapped, %d already current, %d changed meanwhile\n",
		keyring.CurrentVersion(), len(ids), adopted, st.Rewrapped, st.Current, st.Changed)
	fmt.Fprintln(io.stdout, "every data key is wrapped by the current version; older versions may now be removed from LOOM_MASTER_KEY")
	return nil
}
