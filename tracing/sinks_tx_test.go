package tracing

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// TestSinkTransactionSteps: per-batch work added to a sink runs inside the batch's one
// transaction, sees each trace once (only those stored by that transaction), and rolls the
// batch back when it fails.
func TestSinkTransactionSteps(t *testing.T) {
	type setup struct {
		store sinkStore
		steps *[]func(stored []*Trace) error // appended to run inside the transaction
	}
	for _, tc := range []struct {
		name string
		new  func(t *testing.T) setup
	}{
		{"postgres", func(t *testing.T) setup {
			pool := newSinkTestPostgres(t)
			sink, err := NewPostgresSink(t.Context(), pool, PostgresSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var steps []func([]*Trace) error
			sink.inTx = append(sink.inTx, func(ctx context.Context, tx pgx.Tx, stored []*Trace) error {
				for _, f := range steps {
					if err := f(stored); err != nil {
						return err
					}
				}
				return nil
			})
			return setup{postgresSinkStore(sink, pool), &steps}
		}},
		{"sqlite", func(t *testing.T) setup {
			db := newSinkTestSQLite(t)
			sink := NewSQLiteSink(db)
			var steps []func([]*Trace) error
			sink.inTx = append(sink.inTx, func(ctx context.Context, tx *sql.Tx, stored []*Trace) error {
				for _, f := range steps {
					if err := f(stored); err != nil {
						return err
					}
				}
				return nil
			})
			return setup{sqliteSinkStore(sink, db), &steps}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.new(t)
			var seen []string
			*s.steps = append(*s.steps, func(stored []*Trace) error {
				for _, tr := range stored {
					seen = append(seen, tr.ID)
				}
				return nil
			})
			first := sinkTestTraces(3, time.Now())
			if err := s.store.sink.WriteBatch(t.Context(), first); err != nil {
				t.Fatal(err)
			}
			more := sinkTestTraces(2, time.Now())
			if err := s.store.sink.WriteBatch(t.Context(), append(append([]*Trace{}, first...), more...)); err != nil {
				t.Fatal(err)
			}
			want := []string{first[0].ID, first[1].ID, first[2].ID, more[0].ID, more[1].ID}
			if diff := cmp.Diff(want, seen); diff != "" {
				t.Errorf("traces seen by the step (-want +got):\n%s", diff)
			}

			boom := errors.New("step failed")
			*s.steps = append(*s.steps, func([]*Trace) error { return boom })
			if err := s.store.sink.WriteBatch(t.Context(), sinkTestTraces(2, time.Now())); !errors.Is(err, boom) {
				t.Errorf("WriteBatch with a failing step: %v, want the step's error", err)
			}
			if diff := cmp.Diff(sinkStored(append(first, more...)), s.store.read(t)); diff != "" {
				t.Errorf("stored traces after a failed step (-want +got):\n%s", diff)
			}
		})
	}
}
