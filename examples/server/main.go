// Command server runs Loom standalone: the gateway, its stores and trace sinks, health
// endpoints and graceful shutdown, configured from flags and the environment.
//
//	go run ./examples/server             # serve, the default command
//	go run ./examples/server -h          # commands, flags and environment variables
//
// serve starts on :8080 with an embedded SQLite store under ./loom-data and, with no
// upstream configured, the built-in mock provider. See the README for every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	os.Exit(cli(os.Args[1:], stdio{getenv: os.Getenv, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, signals: sigs}))
}

// stdio is what a command may use of its process.
type stdio struct {
	getenv         func(string) string
	stdin          io.Reader // nil: nothing to read
	stdout, stderr io.Writer
	signals        <-chan os.Signal // SIGINT and SIGTERM
	// forced is closed by a second signal: serve stops waiting for in-flight requests.
	forced <-chan struct{}
}

// command is one word of the CLI: adding one is one entry in commands.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, io stdio) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":      {"serve the gateway (the default when no command is given)", runServe},
		"version":    {"print the version", runVersion},
		"migrate":    {"apply (up) or list (status) the store's schema migrations", runMigrate},
		"prices":     {"the price table, models traced without a price, the usage export (CSV)", runPricesCommand},
		"verify":     {"check the audit ledger against the stored traces and signed checkpoints", runVerifyCommand},
		"rollups":    {"recompute the trace rollups from the traces (rollups rebuild -from -to)", runRollups},
		"deadletter": {"list the traces the spool set aside, or replay them (deadletter replay)", runDeadLetterCommand},
		"admin":      {"manage tenants, keys and admin users in the store, without a running server", runAdminCommand},
		"rewrap":     {"after a master key rotation: wrap every tenant data key with the current version", runRewrap},
		"tombstone":  {"seal and sign a month's or a tenant's removal in the audit ledger, before removing the traces", runTombstone},
	}
}

// runPricesCommand is runPrices (prices.go) as a command; -h prints its usage.
func runPricesCommand(ctx context.Context, args []string, io stdio) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(io.stdout, pricesUsage)
		return flag.ErrHelp
	}
	return runPrices(ctx, args, io.getenv, io.stdout)
}

// runVerifyCommand is runVerify (verify.go) as a command.
func runVerifyCommand(ctx context.Context, args []string, io stdio) error {
	return runVerify(ctx, args, io.getenv, io.stdout)
}

// runDeadLetterCommand is runDeadLetter (deadletter.go) as a command. A replay writes to
// the spool, so it takes the data directory's lock: never beside a running server.
func runDeadLetterCommand(ctx context.Context, args []string, io stdio) error {
	if len(args) > 0 && args[0] == "replay" {
		dir := or(io.getenv("LOOM_DATA_DIR"), "./loom-data")
		for i, a := range args {
			if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "data="); ok && strings.HasPrefix(a, "-") {
				dir = v
			} else if (a == "-data" || a == "--data") && i+1 < len(args) {
				dir = args[i+1]
			}
		}
		lock, err := lockDataDir(dir)
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	return runDeadLetter(ctx, args, io.getenv, io.stdout)
}

// Exit codes: 2 for a command line that cannot be run (an unknown command, a bad flag), 1
// for a command that failed.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError is a command line that cannot be run, answered with exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// reported is an error the command already logged: cli only sets the exit code.
type reported struct{ err error }

func (e reported) Error() string { return e.err.Error() }

// cli runs the command args name (serve when args start with a flag or are empty) and
// returns the exit code. The first signal ends the command's context; a second one closes
// io.forced.
func cli(args []string, io stdio) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		printUsage(io.stdout)
		return exitOK
	}
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(io.stderr, "loom: unknown command %q\n", name)
		printUsage(io.stderr)
		return exitUsage
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, forced := make(chan struct{}), make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-io.signals:
			cancel()
		case <-done:
			return
		}
		select {
		case <-io.signals:
			close(forced)
		case <-done:
		}
	}()
	io.forced = forced

	err := cmd.run(ctx, args, io)
	var usage usageError
	var rep reported
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &usage):
		fmt.Fprintf(io.stderr, "loom %s: %v\nRun 'loom %s -h' for usage.\n", name, err, name)
		return exitUsage
	case errors.As(err, &rep):
		return exitError
	}
	fmt.Fprintf(io.stderr, "loom %s: %s\n", name, strings.TrimPrefix(err.Error(), "loom: "))
	return exitError
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: loom [command] [flags]\n\nCommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'loom <command> -h' for a command's flags. Flags of serve:")
	var c config
	fs, _ := serveFlags(&c, func(string) string { return "" })
	fs.SetOutput(w)
	fs.PrintDefaults()
	printEnvVars(w)
}

// newFlagSet is a command's flag set: errors are returned, not printed twice.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args into fs: -h prints the usage to stdout and returns flag.ErrHelp
// (exit code 0), a bad flag is a usageError.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, synopsis, about string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(stdout, fs, synopsis, about)
		return err
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}

func printCommandUsage(w io.Writer, fs *flag.FlagSet, synopsis, about string) {
	fmt.Fprintf(w, "Usage: loom %s %s\n\n%s\n", fs.Name(), synopsis, about)
	fs.SetOutput(w)
	fmt.Fprintln(w, "\nFlags:")
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version string

func versionString() string {
	if version != "" {
		return version
	}
	v := "(devel)"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v + " " + bi.GoVersion
}

func runVersion(ctx context.Context, args []string, io stdio) error {
	fs := newFlagSet("version")
	if err := parseFlags(fs, args, io.stdout, "", "Print the version."); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("version takes no arguments")}
	}
	_, err := fmt.Fprintln(io.stdout, "loom", versionString())
	return err
}
