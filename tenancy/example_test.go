package tenancy_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tenancy"
)

// openExampleDB opens a migrated SQLite database in a temporary directory.
func openExampleDB(ctx context.Context) (db *sql.DB, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "loom-example")
	if err != nil {
		return nil, nil, err
	}
	db, err = sqlitedb.Open(ctx, filepath.Join(dir, "loom.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	cleanup = func() { db.Close(); os.RemoveAll(dir) }
	if err := migrations.Up(ctx, db, migrations.SQLite); err != nil {
		cleanup()
		return nil, nil, err
	}
	return db, cleanup, nil
}

// One Authenticator per process serves requests; the admin Service is built on it, so a
// revocation is refused from the next request on.
func ExampleService() {
	ctx := context.Background()
	db, cleanup, err := openExampleDB(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	store := tenancy.NewSQLiteStore(db)
	auth := tenancy.NewAuthenticator(store, tenancy.AuthOptions{})
	admin := tenancy.NewService(store, auth)

	tenant, _ := admin.CreateTenant(ctx, "Acme")
	raw, key, _ := admin.CreateKey(ctx, tenant.ID, "production")

	p, err := auth.Authenticate(ctx, raw)
	fmt.Println(p.TenantName, err)

	_ = admin.RevokeKey(ctx, tenant.ID, key.ID)
	_, err = auth.Authenticate(ctx, raw)
	fmt.Println(err)
	// Output:
	// Acme <nil>
	// tenancy: API key revoked
}
