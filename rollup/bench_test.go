package rollup_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/rollup"
	"github.com/loom-gateway/loom/sqlitedb"
	"github.com/loom-gateway/loom/tracing"
)

// BenchmarkSinkRollups is the sinks' write throughput without and with the rollup step:
// batches of 512 fresh traces with 1 KiB sealed bodies, as tracing's
// BenchmarkPostgresSinkWriteBatch writes them. "narrow" batches are that benchmark's (one
// tenant, key, model and status: a few rollup rows per batch); "wide" ones spread each
// batch over 20 tenants, 5 keys each, 8 models and 4 statuses (hundreds of rows per batch,
// the worst case for the step). With the step, a folder runs beside the sink as the server
// runs it (every second), and the deltas left when the loop ends are folded inside the timed
// region: folding costs the database too, though outside the sink's transaction.
func BenchmarkSinkRollups(b *testing.B) {
	for _, db := range []string{"postgres", "sqlite"} {
		for _, shape := range []string{"narrow", "wide"} {
			for _, withRollups := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/rollups=%v", db, shape, withRollups)
				b.Run(name, func(b *testing.B) {
					sink, fold := benchSink(b, db, withRollups)
					benchmarkWrites(b, sink, fold, shape == "wide")
				})
			}
		}
	}
}

// benchSink is a sink of a new database, and its folder when withRollups.
func benchSink(b *testing.B, db string, withRollups bool) (tracing.Sink, rollup.Folder) {
	ctx := b.Context()
	if db == "postgres" {
		pool, err := pgxpool.New(ctx, pgtest.New(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(pool.Close)
		sdb := stdlib.OpenDBFromPool(pool)
		b.Cleanup(func() { sdb.Close() })
		if err := migrations.Up(ctx, sdb, migrations.Postgres); err != nil {
			b.Fatal(err)
		}
		var steps []tracing.PostgresTxStep
		if withRollups {
			steps = append(steps, rollup.Postgres)
		}
		sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: steps})
		if err != nil {
			b.Fatal(err)
		}
		return sink, folderIf(withRollups, rollup.PostgresFolder(pool))
	}
	lite, err := sqlitedb.Open(ctx, filepath.Join(b.TempDir(), "loom.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lite.Close() })
	if err := migrations.Up(ctx, lite, migrations.SQLite); err != nil {
		b.Fatal(err)
	}
	var steps []tracing.SQLiteTxStep
	if withRollups {
		steps = append(steps, rollup.SQLite)
	}
	return tracing.NewSQLiteSink(lite, steps...), folderIf(withRollups, rollup.SQLiteFolder(lite))
}

func folderIf(ok bool, f rollup.Folder) rollup.Folder {
	if ok {
		return f
	}
	return nil
}

func benchmarkWrites(b *testing.B, sink tracing.Sink, fold rollup.Folder, wide bool) {
	const batchSize = 512
	body := make([]byte, 1024)
	rand.Read(body)
	models := []string{"gpt-4o-mini", "gpt-4o", "o3-mini", "claude-sonnet-4", "claude-3-5-haiku", "gemini-2.5-flash", "llama-3.3-70b", "mistral-large"}
	batch := make([]*tracing.Trace, batchSize)
	for i := range batch {
		c := int64(1234 + i)
		t := &tracing.Trace{TenantID: "tenant-0", APIKeyID: "key-0", Model: "openai/gpt-4o-mini", ServedModel: "gpt-4o-mini-2024-07-18",
			Provider: "openai", Status: 200, UsageSource: tracing.UsageReported, PromptTokens: int64(1000 + i), CompletionTokens: int64(200 + i),
			CostMicroUSD: &c, PriceVersion: "2026-01", LatencyUS: int64(1_500_000 + i*997), TTFBUS: int64(300_000 + i*101), OverheadUS: int64(400 + i),
			SealedRequest: body, SealedResponse: body, KeyVersion: 1}
		if wide {
			t.TenantID = fmt.Sprintf("tenant-%d", i%20)
			t.APIKeyID = fmt.Sprintf("key-%d-%d", i%20, i/20%5)
			t.Model = models[i/100%8]
			t.Status = []int{200, 200, 429, 500}[i%4]
		}
		batch[i] = t
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	if fold != nil {
		defer fold.Start(time.Second, func(err error) { b.Error(err) })()
	}
	for range b.N {
		now := time.Now()
		for _, t := range batch {
			t.ID, t.CreatedAt = uuid.Must(uuid.NewV7()).String(), now
		}
		if err := sink.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	if fold != nil {
		if _, err := fold.All(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "traces/s")
}
