package tracing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

var _ Sink = (*SQLiteSink)(nil)

// SQLiteSink writes traces to the traces table of migrations/sqlite, the embedded default
// store. Each WriteBatch is one transaction running one prepared INSERT per trace, which in
// SQLite (in process, no round trips) is the batched form.
type SQLiteSink struct {
	db     *sql.DB
	closed atomic.Bool

	// inTx is the per-batch work that must commit or roll back with the traces (rollups,
	// a ledger): each step runs inside the batch's transaction, in order, after the traces
	// are in, and sees only the traces this transaction stored (a duplicate offered again
	// is not passed twice). A step's error rolls the whole batch back.
	inTx []SQLiteTxStep
}

// SQLiteTxStep is one piece of per-batch work inside a SQLiteSink batch transaction, with
// the contract of PostgresTxStep: it runs after the traces are in, sees each stored trace
// once, and its error rolls the batch back.
type SQLiteTxStep func(ctx context.Context, tx *sql.Tx, stored []*Trace) error

// NewSQLiteSink returns a sink writing to db. The caller has applied the migrations and owns
// db: Shutdown does not close it. The steps run, in order, inside every batch's transaction
// (the audit ledger, rollups).
func NewSQLiteSink(db *sql.DB, steps ...SQLiteTxStep) *SQLiteSink {
	return &SQLiteSink{db: db, inTx: steps}
}

// insertTraceSQLite ignores only a duplicate id (a trace offered again); unlike INSERT OR
// IGNORE it does not skip a row that breaks any other constraint.
var insertTraceSQLite = fmt.Sprintf(
	"INSERT INTO traces (%s) VALUES (%s) ON CONFLICT (id) DO NOTHING",
	strings.Join(traceTableColumns, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(traceTableColumns)), ", "))

// WriteBatch stores the batch in one transaction, each trace once however often it is
// offered. A failure SQLite will repeat for the same traces (SQLITE_CONSTRAINT,
// SQLITE_MISMATCH, SQLITE_TOOBIG) is returned as Permanent; any other (SQLITE_BUSY,
// SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR, a done ctx) is transient.
func (s *SQLiteSink) WriteBatch(ctx context.Context, batch []*Trace) error {
	if s.closed.Load() {
		return fmt.Errorf("tracing: sqlite: %w", errSinkShutdown)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tracing: sqlite: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tracing: sqlite: begin: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	stmt, err := tx.PrepareContext(ctx, insertTraceSQLite)
	if err != nil {
		return fmt.Errorf("tracing: sqlite: prepare: %w", err)
	}
	defer stmt.Close()
	var stored []*Trace
	for _, t := range batch {
		res, err := stmt.ExecContext(ctx,
			t.ID, t.CreatedAt.UnixMicro(), t.TenantID, t.APIKeyID, t.RequestID,
			t.Model, t.ServedModel, t.Provider, t.Stream, t.Status, t.ErrorType, t.ClientAborted,
			t.PromptTokens, t.CompletionTokens, t.CachedTokens, t.ReasoningTokens, string(t.UsageSource),
			t.CostMicroUSD, t.PriceVersion, t.LatencyUS, t.TTFBUS, t.OverheadUS,
			t.ResponseTruncated, sealedColumn(t.SealedRequest), sealedColumn(t.SealedResponse), t.KeyVersion, t.FieldsCut,
			t.UpstreamRetries,
			t.UsageMethod, t.CacheWrite5mTokens, t.CacheWrite1hTokens, t.AudioPromptTokens,
			t.AudioCompletionTokens, t.AcceptedPredictionTokens, t.RejectedPredictionTokens, t.ServiceTier,
			finishReasonsJSON(t.FinishReasons))
		if err != nil {
			return sqliteClassify(fmt.Errorf("tracing: sqlite: insert trace %q: %w", t.ID, err))
		}
		if len(s.inTx) > 0 {
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("tracing: sqlite: insert trace %q: %w", t.ID, err)
			} else if n > 0 {
				stored = append(stored, t)
			}
		}
	}
	for _, step := range s.inTx {
		if err := step(ctx, tx, stored); err != nil {
			return sqliteClassify(fmt.Errorf("tracing: sqlite: %w", err))
		}
	}
	if err := tx.Commit(); err != nil {
		return sqliteClassify(fmt.Errorf("tracing: sqlite: commit: %w", err))
	}
	return nil
}

// finishReasonsJSON is the finish_reasons column of migrations/sqlite: a JSON array of
// strings, "[]" for none.
func finishReasonsJSON(r []string) string {
	if len(r) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(r) // strings, store-safe: cannot fail
	return string(b)
}

// Shutdown makes later WriteBatch calls fail. It does not close the database, which the
// caller owns. It is safe to call more than once.
func (s *SQLiteSink) Shutdown(context.Context) error {
	s.closed.Store(true)
	return nil
}

// SQLite primary result codes (https://sqlite.org/rescode.html) the sink classifies; an
// extended code carries its primary code in the low byte.
const (
	sqliteTooBig     = 18
	sqliteConstraint = 19
	sqliteMismatch   = 20
)

// sqliteClassify marks err Permanent when SQLite refused the data itself.
func sqliteClassify(err error) error {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return err
	}
	switch coded.Code() & 0xff {
	case sqliteTooBig, sqliteConstraint, sqliteMismatch:
		return Permanent(err)
	}
	return err
}
