// Package sqlitedb opens Loom's embedded SQLite database (modernc.org/sqlite, no cgo) with
// the settings every user of it relies on.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens (creating if needed) the SQLite database file at path: WAL journal so readers
// never block the writer, synchronous=NORMAL (durable at each WAL checkpoint, safe against
// corruption), a busy timeout so concurrent writers wait instead of failing, and foreign
// keys on. A new file is created readable by this user only (0600); SQLite gives its -wal
// and -shm files the same mode.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	return db, nil
}
