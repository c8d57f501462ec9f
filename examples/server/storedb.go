package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
)

// existingStore is the server's store as a command that works beside or without the server
// opens it (verify, tombstone, rollups, rewrap): db on both stores, pool on PostgreSQL.
type existingStore struct {
	db      *sql.DB
	pool    *pgxpool.Pool // nil on SQLite
	dialect string        // migrations.Postgres or migrations.SQLite
	close   func()
}

// openExistingStore opens the PostgreSQL database of url (checked to answer), else the
// SQLite store in dataDir, which must exist: these commands never create a store.
func openExistingStore(ctx context.Context, url, dataDir string) (*existingStore, error) {
	if url != "" {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("DATABASE_URL: cannot connect to %s: %w", describeDatabase(url), err)
		}
		db := stdlib.OpenDBFromPool(pool)
		return &existingStore{db: db, pool: pool, dialect: migrations.Postgres, close: func() { db.Close(); pool.Close() }}, nil
	}
	path := filepath.Join(dataDir, "loom.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no store at %s: %w", path, err)
	}
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	return &existingStore{db: db, dialect: migrations.SQLite, close: func() { db.Close() }}, nil
}
