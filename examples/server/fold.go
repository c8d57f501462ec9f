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
	done := make(chan struct{})
	failing := false
	report := func(err error) {
		if !failing {
			log.Warn("rollup fold failed; the analytics stay right, the deltas wait", "err", err)
		}
		failing = true
	}
	ok := func(f rollup.Folder) rollup.Folder {
		return func(ctx context.Context, limit int) (int, error) {
			n, err := f(ctx, limit)
			if err == nil && failing {
				failing = false
				log.Info("rollup folding resumed")
			}
			return n, err
		}
	}
	go func() {
		defer close(done)
		ok(fold).Run(ctx, foldEvery, report)
	}()
	s.closers = append(s.closers, func() error {
		cancel()
		<-done
		return nil
	})
}
