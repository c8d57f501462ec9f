package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/sqlitedb"
)

// runServe serves until the first signal, then shuts down gracefully; a second signal
// stops waiting and exits at once, saying what was still in flight.
func runServe(ctx context.Context, args []string, io stdio) error {
	cfg, err := parseConfig(args, io.getenv)
	if errors.Is(err, flag.ErrHelp) {
		var c config
		fs, _ := serveFlags(&c, func(string) string { return "" })
		printCommandUsage(io.stdout, fs, "[flags]", "Serve the gateway (the default command).")
		printEnvVars(io.stdout)
		return err
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, io.stderr)
	s, err := Start(ctx, cfg, io.stdout, log)
	if err != nil {
		log.Error("start failed: " + err.Error())
		return reported{err}
	}
	<-ctx.Done()
	log.Info("shutting down: finishing in-flight requests, then flushing traces", "timeout", cfg.ShutdownTimeout,
		"in_flight", s.access.inflight.Load())
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- s.Close(shutdownCtx) }()
	select {
	case err := <-closed:
		if err != nil {
			log.Error("shutdown: " + err.Error())
			return reported{err}
		}
		log.Info("stopped")
		return nil
	case <-io.forced:
		st := s.Gateway.TraceStats()
		log.Error("second signal: exiting now", "in_flight", s.access.inflight.Load(), "traces_pending", st.Pending,
			"note", "pending traces already spooled are written at the next start")
		return reported{errors.New("forced exit")}
	}
}

// runMigrate applies or lists the schema migrations of the store serve would use
// (DATABASE_URL, else the SQLite database in the data directory, which it locks).
func runMigrate(ctx context.Context, args []string, io stdio) error {
	fs := newFlagSet("migrate")
	var direction string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		direction, args = args[0], args[1:] // migrate up -data dir
	}
	dataDir := fs.String("data", or(io.getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory of the SQLite store (LOOM_DATA_DIR); unused with DATABASE_URL")
	if err := parseFlags(fs, args, io.stdout, "up|status [flags]",
		"Apply the pending schema migrations (up) or list them (status), for DATABASE_URL or the SQLite store in the data directory."); err != nil {
		return err
	}
	if direction == "" && fs.NArg() > 0 {
		direction = fs.Arg(0) // migrate -data dir up
		fs.Parse(fs.Args()[1:])
	}
	if fs.NArg() != 0 || (direction != "up" && direction != "status") {
		return usageError{errors.New("want up or status")}
	}
	var (
		db      *sql.DB
		dialect string
	)
	if url := io.getenv("DATABASE_URL"); url != "" {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return errors.New("DATABASE_URL: not a PostgreSQL URL")
		}
		db, dialect = stdlib.OpenDB(*cfg), migrations.Postgres
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return fmt.Errorf("DATABASE_URL: cannot connect to %s: %w", describeDatabase(url), err)
		}
	} else {
		path := filepath.Join(*dataDir, "loom.db")
		if direction == "status" {
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("no store at %s: %w", path, err)
			}
		} else if err := os.MkdirAll(*dataDir, 0o700); err != nil {
			return fmt.Errorf("-data (LOOM_DATA_DIR): %w", err)
		}
		lock, err := lockDataDir(*dataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		if db, err = sqlitedb.Open(ctx, path); err != nil {
			return err
		}
		dialect = migrations.SQLite
	}
	defer db.Close()
	if direction == "up" {
		if err := migrations.Up(ctx, db, dialect); err != nil {
			return err
		}
	}
	list, err := migrations.Status(ctx, db, dialect)
	if err != nil {
		return err
	}
	for _, m := range list {
		state := "pending"
		if m.Applied {
			state = "applied"
		}
		fmt.Fprintf(io.stdout, "%s %5d %s\n", dialect, m.Version, m.Name+" "+state)
	}
	return nil
}
