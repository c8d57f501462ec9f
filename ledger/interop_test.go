package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/loom-gateway/loom/internal/pgtest"
	"github.com/loom-gateway/loom/migrations"
	"github.com/loom-gateway/loom/tracing"
)

// TestInteropProofs: exported checkpoints open with note.Open and the public key alone and
// carry the C2SP body; the inclusion proof of every trace (its leaf recomputed from the
// trace, not read back) and a consistency proof between two checkpoints check with
// transparency-dev/merkle's verifiers after a JSON round trip.
func TestInteropProofs(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, d)
			more := testTraces("acme", monthA.Add(time.Hour), 3)
			f.write(t, f.sink, more)
			cps := f.checkpoint(t, f.signer)
			if len(cps) != 2 || cps[0].Size != 13 || cps[1].Origin != "loom/root" || cps[1].Size != 4 {
				t.Fatalf("second checkpoint round exported %+v, want acme/2026-11 at 13 and the root log at 4", cps)
			}
			n, err := note.Open(cps[0].Note, note.VerifierList(f.verifier))
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("loom/acme/2026-11\n13\n%s\n", b64(cps[0].Root))
			if diff := cmp.Diff(want, n.Text); diff != "" {
				t.Errorf("checkpoint body (-want +got):\n%s", diff)
			}

			files, err := ReadDir(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			o := VerifyOptions{DB: f.db, Dialect: d, Verifier: f.verifier, Checkpoints: files}
			idf := sqliteID
			if d == Postgres {
				idf = pgID
			}
			for i, tr := range append(append([]*tracing.Trace{}, f.a...), more...) {
				inc, err := ProveTrace(t.Context(), o, tr.ID)
				if err != nil {
					t.Fatal(err)
				}
				var got Inclusion
				roundTrip(t, inc, &got)
				id, _ := idf(tr.ID)
				leaf := LeafOf(tr, id)
				if got.LeafIndex != uint64(i) || got.TreeSize != 13 {
					t.Errorf("trace %d: index %d size %d, want %d 13", i, got.LeafIndex, got.TreeSize, i)
				}
				if err := proof.VerifyInclusion(rfc6962.DefaultHasher, got.LeafIndex, got.TreeSize, leaf.Hash(), got.Proof, got.Root); err != nil {
					t.Errorf("trace %d: inclusion: %v", i, err)
				}
				if _, err := note.Open([]byte(got.Checkpoint), note.VerifierList(f.verifier)); err != nil {
					t.Errorf("trace %d: checkpoint: %v", i, err)
				}
			}
			c, err := ProveConsistency(t.Context(), o, "loom/acme/2026-11", 10, 13)
			if err != nil {
				t.Fatal(err)
			}
			var got Consistency
			roundTrip(t, c, &got)
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, 10, 13, got.Proof, got.Root1, got.Root2); err != nil {
				t.Errorf("consistency 10 to 13: %v", err)
			}
			rc, err := ProveConsistency(t.Context(), o, "loom/root", 3, 4)
			if err != nil {
				t.Fatal(err)
			}
			var gotRoot Consistency
			roundTrip(t, rc, &gotRoot)
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, 3, 4, gotRoot.Proof, gotRoot.Root1, gotRoot.Root2); err != nil {
				t.Errorf("root log consistency 3 to 4: %v", err)
			}
			if gotRoot.Root2 == nil || string(gotRoot.Root2) != string(cps[1].Root) {
				t.Errorf("root log consistency proof ends at %x, want the signed root %x", gotRoot.Root2, cps[1].Root)
			}
			tail := testTraces("acme", monthA.Add(2*time.Hour), 1)
			f.write(t, f.sink, tail)
			if _, err := ProveTrace(t.Context(), o, tail[0].ID); !errors.Is(err, ErrUnanchored) {
				t.Errorf("proof of an unanchored trace: %v, want ErrUnanchored", err)
			}
		})
	}
}

func roundTrip(t *testing.T, v, out any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// concurrentTraces is how many traces TestConcurrentWriters writes: 200,000 (about 15 s,
// 75 s with -race, on two shared cores), 20,000 with -short; -ledger.traces sets another
// count: go test -run TestConcurrentWriters ./ledger -ledger.traces 1000000
var concurrentTraces = flag.Int("ledger.traces", 200000, "traces TestConcurrentWriters writes (a multiple of 400; -short: 20000)")

// TestConcurrentWriters: four sinks, each with its own pool (four replicas), write to one
// PostgreSQL database at once, into shared logs (5 tenants, 2 months); one of them loses
// its connection in the middle of a batch transaction, after its ledger step, every few
// batches, and retries the batch as the pipeline would. A checkpointer exports while they
// write. Every log is contiguous, holds every trace once, and verifies.
func TestConcurrentWriters(t *testing.T) {
	const writers, batchSize = 4, 100
	total := *concurrentTraces
	if testing.Short() {
		total = 20000
	}
	if total%(writers*batchSize) != 0 {
		t.Fatalf("-ledger.traces %d is not a multiple of %d", total, writers*batchSize)
	}
	perWriter := total / writers
	ctx := t.Context()
	url := pgtest.New(t)
	setup, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(setup.Close)
	db := stdlib.OpenDBFromPool(setup)
	t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db, migrations.Postgres); err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := GenerateKey("loom-test")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	dir := t.TempDir()
	cp := &Checkpointer{DB: db, Dialect: Postgres, Signer: signer, Exporter: DirExporter{Dir: dir}, Interval: 200 * time.Millisecond}
	cpCtx, stopCheckpoints := context.WithCancel(ctx)
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(cpCtx) }()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	kills := 0
	for w := range writers {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		steps := []tracing.PostgresTxStep{AppendPostgres}
		batches := 0
		if w == 0 {
			steps = append(steps, func(ctx context.Context, tx pgx.Tx, _ []*tracing.Trace) error {
				batches++
				if batches%7 == 3 {
					kills++
					tx.Conn().Close(ctx) // the writer dies mid-transaction
					return errors.New("killed")
				}
				return nil
			})
		}
		sink, err := tracing.NewPostgresSink(ctx, pool, tracing.PostgresSinkOptions{TxSteps: steps})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < perWriter/batchSize; b++ {
				var batch []*tracing.Trace
				for _, tenant := range []string{"t1", "t2", "t3", "t4", "t5"} {
					batch = append(batch, testTraces(tenant, monthA.Add(time.Duration(b)*time.Second), batchSize/10)...)
					batch = append(batch, testTraces(tenant, monthB.Add(time.Duration(b)*time.Second), batchSize/10)...)
				}
				for try := 0; ; try++ {
					err := sink.WriteBatch(ctx, batch)
					if err == nil {
						break
					}
					if try == 5 {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if kills == 0 {
		t.Fatal("no writer was killed mid-transaction")
	}
	stopCheckpoints()
	<-cpDone
	if _, err := cp.Once(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := ReadDir(dir)
	if len(files) <= 10 {
		t.Errorf("%d checkpoints exported, want several per log", len(files))
	}
	rep, err := Verify(ctx, VerifyOptions{DB: db, Dialect: Postgres, Verifier: verifier, Checkpoints: files})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range rep.Failures {
		if i < 10 {
			t.Error(f)
		}
	}
	var leaves uint64
	for _, l := range rep.Logs {
		leaves += l.Leaves
		if l.Unanchored != 0 {
			t.Errorf("%s: %d unanchored leaves after a checkpoint", l.Log, l.Unanchored)
		}
	}
	if leaves != uint64(total) || rep.Traces != total || len(rep.Logs) != 10 {
		t.Errorf("%d leaves in %d logs, %d trace rows; want %d in 10 logs", leaves, len(rep.Logs), rep.Traces, total)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestCheckpointerElection: on PostgreSQL one checkpointer at a time holds the writer's
// advisory lock; when its connection goes, another takes over. Run exports the logs that
// grew, by itself, and stops with its context.
func TestCheckpointerElection(t *testing.T) {
	f := newFixture(t, Postgres)
	c1, c2 := f.checkpointer(f.signer), f.checkpointer(f.signer)
	conn1, ok, err := c1.elect(t.Context())
	if err != nil || !ok {
		t.Fatalf("first election: %v %v, want won", ok, err)
	}
	if _, ok, err := c2.elect(t.Context()); err != nil || ok {
		t.Fatalf("second election while the first holds the lock: %v %v, want lost", ok, err)
	}
	conn1.Close()
	conn2, ok, err := c2.elect(t.Context())
	if err != nil || !ok {
		t.Fatalf("election after the leader left: %v %v, want won", ok, err)
	}
	conn2.Close()

	more := testTraces("acme", monthA.Add(time.Hour), 2)
	f.write(t, f.sink, more)
	c1.Interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c1.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		files, err := ReadDir(f.dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 6 { // three first checkpoints and the root's, acme/2026-11 at 12 and the root's
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run exported %d checkpoints, want 6", len(files))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if rep := f.verify(t, false); !rep.OK() || rep.Logs[1].Checkpointed != 12 {
		t.Errorf("after Run: failures %v, logs %+v", rep.Failures, rep.Logs)
	}
}
