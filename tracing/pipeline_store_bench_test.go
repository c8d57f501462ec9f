package tracing

import (
	"bytes"
	"context"
	"testing"
	"time"

	loomcrypto "github.com/loom-gateway/loom/crypto"
)

// The end-to-end trace throughput: Record → spool (sealed with the real keyring, fsynced by
// group commit) → shipper → store, counted in the store after the flush.

func BenchmarkPipelinePostgres(b *testing.B) {
	pool := newSinkTestPostgres(b)
	sink, err := NewPostgresSink(b.Context(), pool, PostgresSinkOptions{})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkPipelineStore(b, sink, func() int {
		var n int
		if err := pool.QueryRow(b.Context(), "SELECT count(*) FROM traces").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	})
}

func BenchmarkPipelineSQLite(b *testing.B) {
	db := newSinkTestSQLite(b)
	benchmarkPipelineStore(b, NewSQLiteSink(db), func() int {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM traces").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	})
}

func benchmarkPipelineStore(b *testing.B, sink Sink, count func() int) {
	keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		b.Fatal(err)
	}
	p, err := NewPipeline(PipelineConfig{Sinks: []Sink{sink}, Sealer: keyring, SpoolDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	req, resp := bytes.Repeat([]byte("q"), 1024), bytes.Repeat([]byte("a"), 2048)
	ctx := context.Background()
	before := count()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tr := pipeTrace(i)
		tr.ID, tr.CreatedAt = sinkTestID(time.Now()), time.Now()
		tr.RequestBody, tr.ResponseBody = req, resp
		if i%1024 == 0 {
			waitQueue(p, cap(p.in)/2) // back-pressure instead of ErrQueueFull
		}
		if err := p.Record(ctx, tr); err != nil {
			b.Fatal(err)
		}
		i++
	}
	flushCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.Shutdown(flushCtx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := count() - before; got != i {
		b.Fatalf("store has %d new traces, want %d", got, i)
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "traces/s")
}
