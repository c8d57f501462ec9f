package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"

	loomcrypto "github.com/loom-gateway/loom/crypto"
	"github.com/loom-gateway/loom/tracing"
)

// BenchmarkSinkWriteBatch is the trace write throughput of each store's sink without and
// with the ledger: batches of 512 fresh traces over 4 tenants, 1 KiB and 2 KiB sealed
// bodies. With the ledger it also reports what the ledger tables add per trace.
func BenchmarkSinkWriteBatch(b *testing.B) {
	for _, d := range dialects {
		for _, withLedger := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/ledger=%v", d, withLedger), func(b *testing.B) {
				s := newTestStore(b, d)
				sink := s.plain
				if withLedger {
					sink = s.sink
				}
				batch := benchBatch(512)
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					b.StopTimer()
					now := time.Now()
					for _, t := range batch {
						id, _ := uuid.NewV7()
						t.ID, t.CreatedAt = id.String(), now
					}
					b.StartTimer()
					s.write(b, sink, batch)
					n += len(batch)
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "traces/s")
				if withLedger {
					b.ReportMetric(float64(s.ledgerBytes(b))/float64(n), "ledger-bytes/trace")
				}
			})
		}
	}
}

func benchBatch(n int) []*tracing.Trace {
	batch := make([]*tracing.Trace, n)
	req, resp := make([]byte, 1024), make([]byte, 2048)
	rand.Read(req)
	rand.Read(resp)
	for i := range batch {
		batch[i] = testTraces(fmt.Sprintf("tenant-%d", i%4), time.Now(), 1)[0]
		batch[i].SealedRequest, batch[i].SealedResponse = req, resp
	}
	return batch
}

// ledgerBytes is the on-disk size of the ledger tables (with their indexes).
func (s *testStore) ledgerBytes(b testing.TB) int64 {
	q := "SELECT pg_total_relation_size('ledger_leaves') + pg_total_relation_size('ledger_logs')"
	if s.dialect == SQLite {
		q = "SELECT sum(pgsize) FROM dbstat WHERE name IN ('ledger_leaves', 'ledger_logs', 'sqlite_autoindex_ledger_leaves_1', 'sqlite_autoindex_ledger_logs_1')"
	}
	var n int64
	if err := s.db.QueryRowContext(b.Context(), q).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkVerify is Verify's speed over 20,000 traces in 8 logs, reading metadata and the
// recorded body hashes, and deep (re-hashing every 1 KiB + 2 KiB ciphertext).
func BenchmarkVerify(b *testing.B) {
	for _, d := range dialects {
		s := newTestStore(b, d)
		const total = 20000
		for i := 0; i < total; i += 500 {
			batch := benchBatch(500)
			for j, t := range batch {
				id, _ := uuid.NewV7()
				t.ID = id.String()
				t.CreatedAt = []time.Time{monthA, monthB}[j%2].Add(time.Duration(i+j) * time.Millisecond)
			}
			s.write(b, s.sink, batch)
		}
		skey, vkey, _ := GenerateKey("bench")
		signer, _ := note.NewSigner(skey)
		verifier, _ := note.NewVerifier(vkey)
		dir := b.TempDir()
		if _, err := (&Checkpointer{DB: s.db, Dialect: d, Signer: signer, Exporter: DirExporter{Dir: dir}}).Once(b.Context()); err != nil {
			b.Fatal(err)
		}
		files, _ := ReadDir(dir)
		for _, deep := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/deep=%v", d, deep), func(b *testing.B) {
				n := 0
				for b.Loop() {
					rep, err := Verify(b.Context(), VerifyOptions{DB: s.db, Dialect: d, Verifier: verifier, Checkpoints: files, Deep: deep})
					if err != nil || !rep.OK() || rep.Traces != total {
						b.Fatalf("verify: %v, %d traces, failures %v", err, rep.Traces, rep.Failures)
					}
					n += rep.Traces
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "traces/s")
			})
		}
	}
}

// BenchmarkPipelinePostgres is the end-to-end trace throughput (Record → sealed, fsynced
// spool → shipper → PostgreSQL), as tracing's benchmark of the same name, without and with
// the ledger in the sink's transaction.
func BenchmarkPipelinePostgres(b *testing.B) {
	for _, withLedger := range []bool{false, true} {
		b.Run(fmt.Sprintf("ledger=%v", withLedger), func(b *testing.B) {
			s := newTestStore(b, Postgres)
			sink := s.plain
			if withLedger {
				sink = s.sink
			}
			keyring, err := loomcrypto.NewKeyring(1, map[int][]byte{1: bytes.Repeat([]byte{1}, 32)})
			if err != nil {
				b.Fatal(err)
			}
			p, err := tracing.NewPipeline(tracing.PipelineConfig{Sinks: []tracing.Sink{sink}, Sealer: keyring, SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			req, resp := bytes.Repeat([]byte("q"), 1024), bytes.Repeat([]byte("a"), 2048)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				tr := testTraces(fmt.Sprintf("tenant-%d", i%4), time.Now(), 1)[0]
				tr.SealedRequest, tr.SealedResponse = nil, nil
				tr.RequestBody, tr.ResponseBody = req, resp
				if i%1024 == 0 {
					for st := p.Stats(); st.Recorded-st.Spooled > 2048; st = p.Stats() {
						time.Sleep(50 * time.Microsecond) // back-pressure instead of a full queue
					}
				}
				if err := p.Record(b.Context(), tr); err != nil {
					b.Fatal(err)
				}
				i++
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			var n int
			if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM traces").Scan(&n); err != nil || n != i {
				b.Fatalf("store has %d traces (%v), want %d", n, err, i)
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "traces/s")
		})
	}
}

// BenchmarkAppendPostgres is the ledger's own work per batch on PostgreSQL, without the
// traces' insert: a transaction running AppendPostgres on 512 fresh traces over 4 tenants
// (1 KiB and 2 KiB sealed bodies), and its commit.
func BenchmarkAppendPostgres(b *testing.B) {
	s := newTestStore(b, Postgres)
	pool, err := pgxpool.New(b.Context(), s.url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	batch := benchBatch(512)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		b.StopTimer()
		now := time.Now()
		for _, t := range batch {
			id, _ := uuid.NewV7()
			t.ID, t.CreatedAt = id.String(), now
		}
		b.StartTimer()
		err := pgx.BeginFunc(b.Context(), pool, func(tx pgx.Tx) error { return AppendPostgres(b.Context(), tx, batch) })
		if err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "traces/s")
}
