package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/ledger"
)

// runVerify is the verify command: it checks the trace database against the exported
// checkpoints and the pinned public key, prints what it found and fails if anything is
// wrong. With -trace it prints that trace's inclusion proof, with -origin/-from/-to a
// consistency proof between two checkpoints, as JSON.
func runVerify(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	dataDir := fs.String("data", env("LOOM_DATA_DIR", "./loom-data"), "data directory of the embedded store (LOOM_DATA_DIR)")
	cpDir := fs.String("checkpoints", getenv("LOOM_LEDGER_CHECKPOINTS"), "directory of exported checkpoints (LOOM_LEDGER_CHECKPOINTS; default <data>/checkpoints)")
	pub := fs.String("key", getenv("LOOM_LEDGER_PUBLIC_KEY"), "pinned public key of the checkpoint signer (LOOM_LEDGER_PUBLIC_KEY; default: derived from LOOM_LEDGER_KEY or <data>/ledger.key)")
	deep := fs.Bool("deep", false, "re-hash every stored ciphertext")
	trace := fs.String("trace", "", "print the inclusion proof of this trace id as JSON")
	origin := fs.String("origin", "", "with -from and -to: print a consistency proof of this log (loom/root: the root log) as JSON")
	from := fs.Uint64("from", 0, "first checkpoint size for -origin")
	to := fs.Uint64("to", 0, "second checkpoint size for -origin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpDir == "" {
		*cpDir = filepath.Join(*dataDir, "checkpoints")
	}
	verifier, err := pinnedVerifier(*pub, getenv("LOOM_LEDGER_KEY"), *dataDir)
	if err != nil {
		return err
	}
	files, err := ledger.ReadDir(*cpDir)
	if err != nil {
		return err
	}
	o := ledger.VerifyOptions{Verifier: verifier, Checkpoints: files, Deep: *deep}
	st, err := openExistingStore(ctx, getenv("DATABASE_URL"), *dataDir)
	if err != nil {
		return err
	}
	defer st.close()
	o.DB, o.Dialect = st.db, st.dialect

	switch {
	case *trace != "":
		p, err := ledger.ProveTrace(ctx, o, *trace)
		if err != nil {
			return err
		}
		return printJSON(stdout, p)
	case *origin != "":
		p, err := ledger.ProveConsistency(ctx, o, *origin, *from, *to)
		if err != nil {
			return err
		}
		return printJSON(stdout, p)
	}
	rep, err := ledger.Verify(ctx, o)
	if err != nil {
		return err
	}
	for _, l := range rep.Logs {
		extra := ""
		if l.Tombstoned {
			extra = " (tombstoned: its removed traces are expected)"
		}
		fmt.Fprintf(stdout, "log %s: %d leaves, %d under a signed checkpoint%s\n", l.Log, l.Leaves, l.Checkpointed, extra)
	}
	fmt.Fprintf(stdout, "root log: %d events, %d under a signed root checkpoint\n", rep.Root.Leaves, rep.Root.Checkpointed)
	if rep.Root.Unanchored > 0 {
		fmt.Fprintf(stdout, "unanchored: root log: the last %d events are after its last exported checkpoint (consistent, not yet provable)\n", rep.Root.Unanchored)
	}
	for _, l := range rep.Logs {
		if l.Unanchored > 0 {
			fmt.Fprintf(stdout, "unanchored: log %s: the last %d leaves are after its last exported checkpoint (consistent, not yet provable)\n", l.Log, l.Unanchored)
		}
	}
	if rep.TracesV1 > 0 {
		fmt.Fprintf(stdout, "note: %d traces have version 1 leaves (appended before leaf version 2): their usage details (usage_method to service_tier) and finish_reasons are not covered\n", rep.TracesV1)
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(stdout, "FAIL %s\n", f)
	}
	if !rep.OK() {
		return fmt.Errorf("verify: %d failures in %d traces and %d checkpoints", len(rep.Failures), rep.Traces, len(files))
	}
	fmt.Fprintf(stdout, "ok: %d traces in %d logs verify against %d checkpoints\n", rep.Traces, len(rep.Logs), len(files))
	return nil
}

// pinnedVerifier is the public key given, or the one of the signing key this deployment
// uses (its environment or key file).
func pinnedVerifier(vkey, skey, dataDir string) (note.Verifier, error) {
	if vkey == "" {
		if skey == "" {
			var err error
			if skey, err = readLedgerKeyFile(dataDir); err != nil {
				return nil, fmt.Errorf("verify: no -key, LOOM_LEDGER_PUBLIC_KEY, LOOM_LEDGER_KEY or ledger key file: %w", err)
			}
		}
		var err error
		if vkey, err = ledger.VerifierKey(strings.TrimSpace(skey)); err != nil {
			return nil, err
		}
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("verify: public key: %w", err)
	}
	return v, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("verify: write: %w", err)
	}
	return nil
}
