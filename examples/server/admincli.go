package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/admin"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
)

const adminUsage = `Usage: loom admin <what> <verb> [flags]

  tenants list
  tenants create -name NAME
  tenants delete -tenant ID [-yes]      hard delete: asks to type the id unless -yes
  keys list -tenant ID
  keys create -tenant ID -name NAME     prints the raw key once
  keys revoke -tenant ID -key KEY_ID
  users list
  users create -username NAME           password from LOOM_ADMIN_PASSWORD, else generated and printed once
  users remove -username NAME           never the last one
  users reset-password -username NAME   password as for create; ends the user's sessions

Works on the store serve would use (DATABASE_URL, else the SQLite store in -data, which it
locks: stop the server first). Every change is written to the admin audit log as "cli".
With PostgreSQL a running server sees a revocation within its auth cache TTL.`

// adminStores is what the admin command works on.
type adminStores struct {
	tenants *tenancy.Service
	users   *admin.Users
	close   func()
}

// openAdminStores opens the store (applying migrations, so a fresh one works).
func openAdminStores(ctx context.Context, getenv func(string) string, dataDir string) (*adminStores, error) {
	var (
		ts tenancy.Store
		as admin.Store
	)
	closers := []func(){}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if url := getenv("DATABASE_URL"); url != "" {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, errors.New("DATABASE_URL: not a PostgreSQL URL")
		}
		closers = append(closers, pool.Close)
		if err := pool.Ping(ctx); err != nil {
			closeAll()
			return nil, fmt.Errorf("DATABASE_URL: cannot connect to %s: %w", describeDatabase(url), err)
		}
		db := stdlib.OpenDBFromPool(pool)
		closers = append(closers, func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
			closeAll()
			return nil, err
		}
		ts, as = postgresTenancy(pool), admin.NewPostgresStore(pool)
	} else {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("-data (LOOM_DATA_DIR): %w", err)
		}
		lock, err := lockDataDir(dataDir)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { lock.Close() })
		var db *sql.DB
		if db, err = sqlitedb.Open(ctx, filepath.Join(dataDir, "loom.db")); err != nil {
			closeAll()
			return nil, err
		}
		closers = append(closers, func() { db.Close() })
		if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
			closeAll()
			return nil, err
		}
		ts, as = sqliteTenancy(db), admin.NewSQLiteStore(db)
	}
	users, err := admin.NewUsers(admin.UsersOptions{Store: as})
	if err != nil {
		closeAll()
		return nil, err
	}
	return &adminStores{tenants: tenancy.NewService(ts, nil), users: users, close: closeAll}, nil
}

// runAdminCommand runs "admin <what> <verb> [flags]".
func runAdminCommand(ctx context.Context, args []string, io stdio) error {
	if len(args) < 2 || strings.HasPrefix(args[0], "-") || strings.HasPrefix(args[1], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintln(io.stdout, adminUsage)
			return flag.ErrHelp
		}
		return usageError{errors.New("want: admin <tenants|keys|users> <verb> [flags]")}
	}
	cmd := args[0] + " " + args[1]
	fs := newFlagSet("admin " + cmd)
	dataDir := fs.String("data", or(io.getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory of the SQLite store (LOOM_DATA_DIR); unused with DATABASE_URL")
	name := fs.String("name", "", "tenant or key name")
	tenant := fs.String("tenant", "", "tenant id")
	key := fs.String("key", "", "key id")
	username := fs.String("username", "", "admin username")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if err := parseFlags(fs, args[2:], io.stdout, "", adminUsage); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	need := func(v, flag string) error {
		if v == "" {
			return usageError{fmt.Errorf("%s needs -%s", cmd, flag)}
		}
		return nil
	}
	var err error
	switch cmd {
	case "tenants list", "users list":
	case "tenants create":
		err = need(*name, "name")
	case "tenants delete", "keys list":
		err = need(*tenant, "tenant")
	case "keys create":
		err = errors.Join(need(*tenant, "tenant"), need(*name, "name"))
	case "keys revoke":
		err = errors.Join(need(*tenant, "tenant"), need(*key, "key"))
	case "users create", "users remove", "users reset-password":
		err = need(*username, "username")
	default:
		return usageError{fmt.Errorf("unknown admin command %q", cmd)}
	}
	if err != nil {
		return err
	}
	st, err := openAdminStores(ctx, io.getenv, *dataDir)
	if err != nil {
		return err
	}
	defer st.close()
	a := adminRun{st: st, io: io}
	switch cmd {
	case "tenants list":
		return a.listTenants(ctx)
	case "tenants create":
		t, err := st.tenants.CreateTenant(ctx, *name)
		if err != nil {
			return err
		}
		a.audit(ctx, "tenant.create", t.ID, "name "+fmt.Sprintf("%q", t.Name))
		fmt.Fprintf(io.stdout, "created tenant %s %q\n", t.ID, t.Name)
		return nil
	case "tenants delete":
		return a.deleteTenant(ctx, *tenant, *yes)
	case "keys list":
		return a.listKeys(ctx, *tenant)
	case "keys create":
		raw, k, err := st.tenants.CreateKey(ctx, *tenant, *name)
		if err != nil {
			return err
		}
		a.audit(ctx, "key.create", *tenant+"/"+k.ID, fmt.Sprintf("name %q, prefix %s", k.Name, k.Prefix))
		fmt.Fprintf(io.stdout, "created key %s for tenant %s (shown once, keep it):\n\n    %s\n\n", k.ID, *tenant, raw)
		return nil
	case "keys revoke":
		if err := st.tenants.RevokeKey(ctx, *tenant, *key); err != nil {
			return err
		}
		a.audit(ctx, "key.revoke", *tenant+"/"+*key, "")
		fmt.Fprintf(io.stdout, "revoked key %s\n", *key)
		return nil
	case "users list":
		return a.listUsers(ctx)
	case "users create":
		return a.setUser(ctx, *username, true)
	case "users reset-password":
		return a.setUser(ctx, *username, false)
	case "users remove":
		if err := st.users.DeleteUser(ctx, *username); err != nil {
			return err
		}
		a.audit(ctx, "user.delete", *username, "")
		fmt.Fprintf(io.stdout, "removed admin user %s\n", *username)
		return nil
	}
	return nil
}

type adminRun struct {
	st *adminStores
	io stdio
}

func (a adminRun) audit(ctx context.Context, action, target, detail string) {
	a.st.users.Record(ctx, admin.Event{Actor: "cli", Action: action, Target: target, ClientAddr: "local", Detail: detail})
}

func (a adminRun) listTenants(ctx context.Context) error {
	ts, err := a.st.tenants.ListTenants(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(a.io.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tSTATUS\tKEYS\tCREATED")
	for _, t := range ts {
		keys, err := a.st.tenants.ListKeys(ctx, t.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t%q\t%s\t%d\t%s\n", t.ID, t.Name, t.Status, len(keys), t.CreatedAt.Format(time.RFC3339))
	}
	return w.Flush()
}

func (a adminRun) listKeys(ctx context.Context, tenantID string) error {
	if _, err := a.st.tenants.GetTenant(ctx, tenantID); err != nil {
		return err
	}
	ks, err := a.st.tenants.ListKeys(ctx, tenantID)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(a.io.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tPREFIX\tSTATUS\tCREATED")
	for _, k := range ks {
		fmt.Fprintf(w, "%s\t%q\t%s\t%s\t%s\n", k.ID, k.Name, k.Prefix, k.Status, k.CreatedAt.Format(time.RFC3339))
	}
	return w.Flush()
}

func (a adminRun) listUsers(ctx context.Context) error {
	us, err := a.st.users.ListUsers(ctx)
	if err != nil {
		return err
	}
	for _, u := range us {
		fmt.Fprintf(a.io.stdout, "%s\tcreated %s\tpassword changed %s\n", u.Name, u.CreatedAt.Format(time.RFC3339), u.UpdatedAt.Format(time.RFC3339))
	}
	return nil
}

// setUser creates a user or resets its password: LOOM_ADMIN_PASSWORD if set (never
// echoed), else a generated one printed once.
func (a adminRun) setUser(ctx context.Context, name string, create bool) error {
	pw := a.io.getenv("LOOM_ADMIN_PASSWORD")
	generated := pw == ""
	if generated {
		var err error
		if pw, err = admin.GeneratePassword(); err != nil {
			return err
		}
	}
	if create {
		if _, err := a.st.users.CreateUser(ctx, name, pw); err != nil {
			return err
		}
		a.audit(ctx, "user.create", name, "")
		fmt.Fprintf(a.io.stdout, "created admin user %s\n", name)
	} else {
		if err := a.st.users.SetPassword(ctx, name, pw); err != nil {
			return err
		}
		a.audit(ctx, "user.password", name, "sessions of the user ended")
		fmt.Fprintf(a.io.stdout, "reset the password of admin user %s; their sessions ended\n", name)
	}
	if generated {
		fmt.Fprintf(a.io.stdout, "password (shown once, keep it):\n\n    %s\n\n", pw)
	} else {
		fmt.Fprintln(a.io.stdout, "password: from LOOM_ADMIN_PASSWORD")
	}
	return nil
}

// deleteTenant hard-deletes a tenant after the operator types its id (unless yes).
func (a adminRun) deleteTenant(ctx context.Context, id string, yes bool) error {
	t, err := a.st.tenants.GetTenant(ctx, id)
	if err != nil {
		return err
	}
	if !yes {
		fmt.Fprintf(a.io.stdout, "Hard delete of tenant %s %q: its keys, provider configurations and traces go, and its data key is destroyed. This cannot be undone.\nType the tenant id to confirm: ", t.ID, t.Name)
		var in io.Reader = strings.NewReader("")
		if a.io.stdin != nil {
			in = a.io.stdin
		}
		line, _ := bufio.NewReader(in).ReadString('\n')
		if strings.TrimSpace(line) != t.ID {
			return errors.New("not confirmed: nothing deleted")
		}
	}
	if err := a.st.tenants.DeleteTenant(ctx, id); err != nil {
		return err
	}
	a.audit(ctx, "tenant.delete", id, "hard delete")
	fmt.Fprintf(a.io.stdout, "deleted tenant %s\n", id)
	return nil
}
