package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-gateway/loom/rollup"
)

// foldEvery is how often the server folds the rollup deltas its sink appends: the
// analytics queries read the deltas not yet folded too, so this bounds their work, not
// their truth.
const foldEvery = time.Second

// startFolder folds the rollup deltas in the background until the server closes, and
// counts its work in reg. A failing fold (the database away) is logged once, and again
// when folding resumes.
func (s *Server) startFolder(fold rollup.Folder, reg prometheus.Registerer, log *slog.Logger) error {
	folded := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loom", Name: "rollup_deltas_folded_total",
		Help: "Rollup deltas (one per tenant and sink batch) added to the rollup rows."})
	failures := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loom", Name: "rollup_fold_errors_total",
		Help: "Rollup folds that failed (retried every second)."})
	last := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "loom", Name: "rollup_last_fold_timestamp_seconds",
		Help: "When a rollup fold last succeeded, in Unix seconds."})
	for _, c := range []prometheus.Collector{folded, failures, last} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	failing := false // the folder's goroutine alone reads and writes it
	counted := func(ctx context.Context, limit int) (int, error) {
		n, err := fold(ctx, limit)
		switch {
		case err != nil && ctx.Err() == nil:
			failures.Inc()
			if !failing {
				log.Warn("rollup fold failed; the analytics stay right, the deltas wait", "err", err)
			}
			failing = true
		case err == nil:
			folded.Add(float64(n))
			last.SetToCurrentTime()
			if failing {
				log.Info("rollup folding resumed")
			}
			failing = false
		}
		return n, err
	}
	stop := rollup.Folder(counted).Start(foldEvery, func(error) {})
	s.closers = append(s.closers, func() error { stop(); return nil })
	return nil
}
