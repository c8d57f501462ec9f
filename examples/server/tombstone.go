package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/ledger"
)

const tombstoneAbout = `Seal and tombstone traces before removing them, so the audit ledger verifies afterwards:
the final size and root of each log removed, then the removal (a month's partition, a
tenant, or one tenant's month), recorded in the ledger's root log, signed and exported
with the logs' final checkpoints. Run it before dropping a month's partition (or with
-drop, which drops it right after, on PostgreSQL). Removing traces without it is reported
by verify. A tenant's hard delete through the admin API records its own tombstone.`

// runTombstone is the tombstone command.
func runTombstone(ctx context.Context, args []string, io stdio) error {
	env := func(k, def string) string { return or(io.getenv(k), def) }
	fs := newFlagSet("tombstone")
	dataDir := fs.String("data", env("LOOM_DATA_DIR", "./loom-data"), "data directory of the embedded store (LOOM_DATA_DIR)")
	cpDir := fs.String("checkpoints", io.getenv("LOOM_LEDGER_CHECKPOINTS"), "directory signed checkpoints are exported to (LOOM_LEDGER_CHECKPOINTS; default <data>/checkpoints)")
	month := fs.String("month", "", "the UTC month whose traces are removed, YYYY-MM (before the current month)")
	tenant := fs.String("tenant", "", "the tenant whose traces are removed (with -month: only that month's)")
	drop := fs.Bool("drop", false, "with -month alone, on PostgreSQL: drop the month's partition after the tombstone is exported")
	if err := parseFlags(fs, args, io.stdout, "(-month YYYY-MM | -tenant ID) [-drop]", tombstoneAbout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := checkTombstoneTarget(*tenant, *month, time.Now()); err != nil {
		return usageError{err}
	}
	if *drop && (*month == "" || *tenant != "") {
		return usageError{errors.New("-drop drops a whole month's partition: give -month and no -tenant")}
	}
	url := io.getenv("DATABASE_URL")
	if *drop && url == "" {
		return usageError{errors.New("-drop is for PostgreSQL (DATABASE_URL): the embedded store keeps no monthly partitions")}
	}
	if *cpDir == "" {
		*cpDir = filepath.Join(*dataDir, "checkpoints")
	}
	skey := io.getenv("LOOM_LEDGER_KEY")
	if skey == "" && url == "" {
		var err error
		if skey, err = readLedgerKeyFile(*dataDir); err != nil {
			return fmt.Errorf("ledger key file: %w", err)
		}
	}
	if skey == "" {
		return errors.New("a tombstone must be signed: set LOOM_LEDGER_KEY, the key the servers sign checkpoints with")
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return errors.New("LOOM_LEDGER_KEY: not a checkpoint signing key (PRIVATE+KEY+…, from ledger.GenerateKey)")
	}
	st, err := openExistingStore(ctx, url, *dataDir)
	if err != nil {
		return err
	}
	defer st.close()

	c := &ledger.Checkpointer{DB: st.db, Dialect: st.dialect, Signer: signer, Exporter: ledger.DirExporter{Dir: *cpDir}}
	cps, err := c.Tombstone(ctx, *tenant, *month)
	if err != nil {
		return err
	}
	printTombstone(io.stdout, cps, *cpDir)
	if !*drop {
		if *month != "" && *tenant == "" {
			fmt.Fprintf(io.stdout, "next: remove the traces, for example DROP TABLE %s on PostgreSQL\n", partitionName(*month))
		}
		return nil
	}
	// The name comes from a checked YYYY-MM only; a partition already dropped is fine.
	if _, err := st.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+partitionName(*month)); err != nil {
		return fmt.Errorf("drop %s (the tombstone is exported; run the drop again): %w", partitionName(*month), err)
	}
	fmt.Fprintf(io.stdout, "dropped partition %s\n", partitionName(*month))
	return nil
}

// checkTombstoneTarget refuses what cannot be a tombstone's target: nothing, a month that
// is not a past UTC month (its traces are still being written), a tenant id no tenant can
// have.
func checkTombstoneTarget(tenant, month string, now time.Time) error {
	if tenant == "" && month == "" {
		return errors.New("give -month YYYY-MM, -tenant ID, or both")
	}
	if month != "" {
		m, err := time.Parse("2006-01", month)
		if err != nil || m.Format("2006-01") != month {
			return fmt.Errorf("-month %q is not a month in the form YYYY-MM", truncate(month))
		}
		if m.Year() < 1970 || !m.Before(time.Date(now.UTC().Year(), now.UTC().Month(), 1, 0, 0, 0, 0, time.UTC)) {
			return fmt.Errorf("-month %s is not a past month: traces are still written to it", month)
		}
	}
	if tenant != "" && (!utf8.ValidString(tenant) || strings.ContainsRune(tenant, 0) || len(tenant) > 256) {
		return errors.New("-tenant is not a tenant id (valid UTF-8, no NUL, at most 256 bytes)")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// partitionName is the PostgreSQL partition of traces holding month (YYYY-MM).
func partitionName(month string) string {
	return "traces_y" + month[:4] + "m" + month[5:7]
}

func printTombstone(w io.Writer, cps []ledger.Checkpoint, dir string) {
	sealed := 0
	for _, cp := range cps {
		if cp.TenantID == "" && cp.Month == "" {
			fmt.Fprintf(w, "root log signed at %d events (%s)\n", cp.Size, cp.Origin)
			continue
		}
		sealed++
		fmt.Fprintf(w, "sealed %s at %d leaves: tombstone signed\n", cp.Origin, cp.Size)
	}
	if sealed == 0 {
		fmt.Fprintln(w, "no log holds such traces: the removal alone is recorded")
	}
	fmt.Fprintf(w, "exported to %s\n", dir)
}
