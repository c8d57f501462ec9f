package tracing

import (
	"context"
	"database/sql"
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
}

// NewSQLiteSink returns a sink writing to db. The caller has applied the migrations and owns
// db: Shutdown does not close it.
func NewSQLiteSink(db *sql.DB) *SQLiteSink { return &SQLiteSink{db: db} }

// insertTraceSQLite ignores only a duplicate id (a trace offered again); unlike INSERT OR
// IGNORE it does not skip a row that breaks any other constraint.
var insertTraceSQLite = fmt.Sprintf(
	"INSERT INTO traces (%s) VALUES (%s) ON CONFLICT (id) DO NOTHING",
	strings.Join(traceTableColumns, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(traceTableColumns)), ", "))

// WriteBatch stores the batch in one transaction, each trace once however often it is
// offered.
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
	for _, t := range batch {
		_, err := stmt.ExecContext(ctx,
			t.ID, t.CreatedAt.UnixMicro(), t.TenantID, t.APIKeyID, t.RequestID,
			t.Model, t.ServedModel, t.Provider, t.Stream, t.Status, t.ErrorType, t.ClientAborted,
			t.PromptTokens, t.CompletionTokens, t.CachedTokens, t.ReasoningTokens, string(t.UsageSource),
			t.CostMicroUSD, t.PriceVersion, t.LatencyUS, t.TTFBUS, t.OverheadUS,
			t.ResponseTruncated, sealedColumn(t.SealedRequest), sealedColumn(t.SealedResponse), t.KeyVersion,
			t.UsageMethod, t.CacheWrite5mTokens, t.CacheWrite1hTokens, t.AudioPromptTokens,
			t.AudioCompletionTokens, t.AcceptedPredictionTokens, t.RejectedPredictionTokens, t.ServiceTier)
		if err != nil {
			return fmt.Errorf("tracing: sqlite: insert trace %q: %w", t.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tracing: sqlite: commit: %w", err)
	}
	return nil
}

// Shutdown makes later WriteBatch calls fail. It does not close the database, which the
// caller owns. It is safe to call more than once.
func (s *SQLiteSink) Shutdown(context.Context) error {
	s.closed.Store(true)
	return nil
}
