package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/ledger"
)

// ledgerKeyName names the checkpoint signing key in every signature line.
const ledgerKeyName = "loom-ledger"

// ledgerSigningKey is LOOM_LEDGER_KEY, or else, for the embedded store, the key kept in
// the data directory's ledger.key (created on first start, mode 0600, like master.key).
// With PostgreSQL and no LOOM_LEDGER_KEY it returns "": replicas must share one key, so
// none is made up on one machine, and checkpoints are not written (the logs still are).
func ledgerSigningKey(cfg config, log *slog.Logger) (string, error) {
	if cfg.LedgerKey != "" {
		return cfg.LedgerKey, nil
	}
	if cfg.DatabaseURL != "" {
		return "", nil
	}
	path := filepath.Join(cfg.DataDir, ledgerKeyFile)
	skey, err := readLedgerKeyFile(cfg.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		skey, vkey, err := ledger.GenerateKey(ledgerKeyName)
		if err != nil {
			return "", err
		}
		if err := writeFileSync(path, []byte(skey+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("ledger key file: %w", err)
		}
		log.Warn("no LOOM_LEDGER_KEY set: created a checkpoint signing key file (mode 0600); pin its public key in verifiers", "path", path, "public_key", vkey)
		return skey, nil
	} else if err != nil {
		return "", fmt.Errorf("ledger key file: %w", err)
	}
	return skey, nil
}

// ledgerKeyFile is the embedded default's signing key file in the data directory.
const ledgerKeyFile = "ledger.key"

// readLedgerKeyFile reads and checks the data directory's signing key file: one that other
// users can read is refused (with the chmod to fix it), as a master key file is.
func readLedgerKeyFile(dataDir string) (string, error) {
	path := filepath.Join(dataDir, ledgerKeyFile)
	b, err := readSecretFile(path)
	if err != nil {
		return "", err
	}
	skey := strings.TrimSpace(string(b))
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("%s: not a checkpoint signing key (PRIVATE+KEY+…)", path)
	}
	return skey, nil
}

// startLedger runs the checkpointer until the server closes; closing it writes a last
// checkpoint for the traces flushed on shutdown.
func (s *Server) startLedger(cfg config, log *slog.Logger) error {
	skey, err := ledgerSigningKey(cfg, log)
	if err != nil || skey == "" {
		if err == nil {
			log.Warn("no LOOM_LEDGER_KEY set: the audit ledger records every trace, but no signed checkpoints are exported")
		}
		return err
	}
	log.Info("audit ledger: signed checkpoints", "dir", cfg.CheckpointDir)
	signer, err := note.NewSigner(skey)
	if err != nil {
		return fmt.Errorf("LOOM_LEDGER_KEY: %w", err)
	}
	c := &ledger.Checkpointer{DB: s.db, Dialect: s.dialect, Signer: signer,
		Exporter: ledger.DirExporter{Dir: cfg.CheckpointDir}, Logger: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	s.closers = append(s.closers, func() error {
		cancel()
		<-done
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		_, err := c.Once(fctx)
		return err
	})
	return nil
}
