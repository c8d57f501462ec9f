package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/loom-gateway/loom/tracing"
)

const deadLetterUsage = `usage:
  server deadletter [-data DIR]          list the traces a store refused for good
  server deadletter replay [-data DIR]   write them into the store again, once the cause is fixed

The dead-letter file is in the spool directory (-data/spool). The store is the server's:
DATABASE_URL, else the SQLite store in -data (LOOM_DATA_DIR). A trace refused again stays
in the file.`

// runDeadLetter runs the deadletter command (see deadLetterUsage).
func runDeadLetter(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	replay := len(args) > 0 && args[0] == "replay"
	if replay {
		args = args[1:]
	}
	fs := flag.NewFlagSet("deadletter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data", cmpOr(getenv("LOOM_DATA_DIR"), "./loom-data"), "data directory")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageError{fmt.Errorf("bad arguments %q\n%s", args, deadLetterUsage)}
	}
	dir := filepath.Join(*dataDir, "spool")
	if !replay {
		dead, err := tracing.ReadDeadLetter(dir)
		if err != nil {
			return err
		}
		for _, d := range dead {
			t := d.Trace
			fmt.Fprintf(stdout, "%s  %s  tenant %s  model %q  refused: %q\n", t.ID, t.CreatedAt.Format("2006-01-02T15:04:05Z"), t.TenantID, t.Model, d.Reason)
		}
		fmt.Fprintf(stdout, "%d trace(s) set aside in %s\n", len(dead), dir)
		return nil
	}
	// The sink of the server itself, ledger step included, so a replayed trace is
	// logged like any other.
	s := &Server{}
	defer s.closeAll()
	var sink tracing.Sink
	var err error
	if url := getenv("DATABASE_URL"); url != "" {
		_, sink, _, err = s.openPostgres(ctx, url)
	} else {
		_, sink, _, err = s.openSQLite(ctx, filepath.Join(*dataDir, "loom.db"))
	}
	if err != nil {
		return err
	}
	written, kept, err := tracing.ReplayDeadLetter(ctx, dir, sink)
	if err != nil {
		return fmt.Errorf("deadletter replay: %w", err)
	}
	fmt.Fprintf(stdout, "replayed %d trace(s); %d refused again and kept in %s\n", written, kept, dir)
	return nil
}
