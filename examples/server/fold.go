package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/loom-gateway/loom/rollup"
)

// foldEvery is how often the server folds the rollup deltas its sink appends: the
// analytics queries read the deltas not yet folded too, so this bounds their work, not
// their truth.
const foldEvery = time.Second

// startFolder folds the rollup deltas in the background until the server closes. A
// failing fold (the database away) is logged once, and again when folding resumes.
func (s *Server) startFolder(fold rollup.Folder, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	failing := false // the folder's goroutine alone reads and writes it
	logged := func(ctx context.Context, limit int) (int, error) {
		n, err := fold(ctx, limit)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			log.Warn("rollup fold failed; the analytics stay right, the deltas wait", "err", err)
		case err == nil && failing:
			failing = false
			log.Info("rollup folding resumed")
		}
		return n, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rollup.Folder(logged).Run(ctx, foldEvery, func(error) {})
	}()
	s.closers = append(s.closers, func() error {
		cancel()
		<-done
		return nil
	})
}
