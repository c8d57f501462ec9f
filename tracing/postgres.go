package tracing

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

var _ Sink = (*PostgresSink)(nil)

// errSinkShutdown is returned by WriteBatch after Shutdown.
var errSinkShutdown = errors.New("sink is shut down")

// PostgresSinkOptions configures a PostgresSink. The zero value works.
type PostgresSinkOptions struct {
	// Now returns the current time. It decides which monthly partitions are created ahead of
	// the traces that will need them: at construction the current month and the next two, and
	// with each batch the current month and the next. If nil, time.Now is used.
	Now func() time.Time

	// TxSteps is per-batch work that must commit or roll back with the traces (the audit
	// ledger, rollups): see PostgresTxStep. If nil, a batch is only its traces.
	TxSteps []PostgresTxStep
}

// PostgresSink writes traces to PostgreSQL, into the monthly-partitioned traces table of
// migrations/postgres (which must have been applied).
//
// Each WriteBatch is one transaction: it creates the partitions the batch needs (for any
// month, however far in the past or the future) and copies the batch into traces with COPY:
// three round trips whatever the batch's size. If a trace of the batch is stored already
// (a retry, a replay of the spool), that transaction fails on the duplicate, and a second
// one copies the batch into a per-connection staging table and inserts from there with
// ON CONFLICT DO NOTHING, so a trace offered twice is stored once.
//
// The database role needs INSERT on traces, TEMPORARY on the database (for the staging
// table), and, because partitions are created on demand, ownership of traces (run the
// migrations as the same role). A PostgresSink is safe for concurrent use, also by several
// replicas sharing a database.
type PostgresSink struct {
	pool   *pgxpool.Pool
	now    func() time.Time
	closed atomic.Bool

	// inTx is the per-batch work that must commit or roll back with the traces (rollups,
	// a ledger): each step runs inside the batch's transaction, in order, after the traces
	// are in, and sees only the traces this transaction stored (a duplicate offered again
	// is not passed twice). A step's error rolls the whole batch back.
	inTx []PostgresTxStep

	mu    sync.Mutex
	known map[int]bool // months (see pgMonth) whose partition exists, as far as we know
}

// NewPostgresSink returns a sink writing through pool, which the caller owns: Shutdown does
// not close it. It creates the partitions for the current month and the next two, so it
// fails if the database cannot be reached (or has not been migrated).
func NewPostgresSink(ctx context.Context, pool *pgxpool.Pool, opts PostgresSinkOptions) (*PostgresSink, error) {
	if pool == nil {
		return nil, errors.New("tracing: postgres: nil pool")
	}
	s := &PostgresSink{pool: pool, now: opts.Now, known: map[int]bool{}, inTx: opts.TxSteps}
	if s.now == nil {
		s.now = time.Now
	}
	m := pgMonth(s.now())
	months := []int{m, m + 1, m + 2}
	if _, err := pool.Exec(ctx, ensurePartitionsSQL(months)); err != nil {
		return nil, fmt.Errorf("tracing: postgres: create partitions: %w", err)
	}
	s.markKnown(months)
	return s, nil
}

// traceTableColumns are the traces columns the sink writes, in the order of pgCopySource.Values.
var traceTableColumns = []string{
	"id", "created_at", "tenant_id", "api_key_id", "request_id",
	"model", "served_model", "provider", "stream", "status", "error_type", "client_aborted",
	"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "usage_source",
	"cost_micro_usd", "price_version", "latency_us", "ttfb_us", "overhead_us",
	"response_truncated", "request_sealed", "response_sealed", "key_version", "fields_cut",
	"upstream_retries",
	"usage_method", "cache_write_5m_tokens", "cache_write_1h_tokens", "audio_prompt_tokens",
	"audio_completion_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens", "service_tier",
	"finish_reasons",
}

const (
	// The staging table lives as long as the connection and empties at every commit, so the
	// catalog is not churned by a create and drop per batch. Its rows stay whole (no
	// compression or out-of-line storage) up to a page: they only pass through.
	createStagingSQL = `CREATE TEMPORARY TABLE IF NOT EXISTS loom_trace_staging (LIKE traces INCLUDING STORAGE)
		WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS`
	stagingTable = "loom_trace_staging"
)

// insertFromStagingSQL moves the staged rows into traces; a trace stored before (same id
// and created_at, so the same partition) is skipped.
var insertFromStagingSQL = fmt.Sprintf(
	"INSERT INTO traces (%[1]s) SELECT %[1]s FROM pg_temp.%[2]s ON CONFLICT DO NOTHING",
	strings.Join(traceTableColumns, ", "), stagingTable)

// WriteBatch stores the batch in one transaction, each trace once however often it is
// offered, and returns nil only once that transaction has committed.
//
// A failure the database will repeat for the same traces is returned as Permanent (see
// pgPermanent): a trace whose ID is not a UUID or whose CreatedAt is before year 1, a data
// exception (SQLSTATE class 22), an integrity violation (class 23) other than the duplicate
// the sink handles itself, a program limit (class 54, such as a row too big for an index).
// Everything else is transient and worth retrying: connection loss, timeouts, serialization
// failures and deadlocks (40001, 40P01), insufficient resources (class 53), a dropped
// partition (23514, which the retry recreates).
func (s *PostgresSink) WriteBatch(ctx context.Context, batch []*Trace) error {
	if s.closed.Load() {
		return fmt.Errorf("tracing: postgres: %w", errSinkShutdown)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tracing: postgres: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	src := &pgCopySource{batch: batch, ids: make([]pgtype.UUID, len(batch)), i: -1, vals: make([]any, len(traceTableColumns))}
	for i, t := range batch {
		id, err := parseTraceID(t.ID)
		if err != nil {
			return Permanent(fmt.Errorf("tracing: postgres: trace %q: %w", t.ID, err))
		}
		if t.CreatedAt.Year() < 1 {
			return Permanent(fmt.Errorf("tracing: postgres: trace %q: created_at %v out of range", t.ID, t.CreatedAt))
		}
		src.ids[i] = pgtype.UUID{Bytes: id, Valid: true}
	}
	months := s.unknownMonths(batch)

	err := s.write(ctx, src, months, false)
	if pgErrorCode(err) == pgUniqueViolation {
		// A trace of the batch is stored already (a retry after a lost commit reply, or a
		// replay of the spool): take the slower path that skips stored traces.
		src.i = -1
		err = s.write(ctx, src, months, true)
	}
	if err != nil {
		if pgErrorCode(err) == pgCheckViolation {
			// No partition for a row: someone dropped a month we thought existed (retention
			// racing with a replay of old traces). Forget what we know; the retry recreates it.
			s.forgetMonths()
		}
		err = fmt.Errorf("tracing: postgres: %w", err)
		if pgPermanent(err) {
			return Permanent(err)
		}
		return err
	}
	// Only now: partitions created in a transaction that rolled back do not exist.
	s.markKnown(months)
	return nil
}

// write runs one transaction storing the batch of src, after creating the partitions of
// months. Unstaged, it copies the batch straight into traces, which fails on a trace stored
// before; staged, it copies into the staging table and inserts from there skipping stored
// traces, which costs about twice as much.
func (s *PostgresSink) write(ctx context.Context, src *pgCopySource, months []int, staged bool) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// After a commit this does nothing; after a failure it ends the transaction, or, if ctx
	// is done, closes the connection, which the pool then discards.
	defer tx.Rollback(ctx)

	// Partitions first, before anything locks traces: creating one takes an ACCESS EXCLUSIVE
	// lock on traces, and a transaction holding a weaker lock while waiting for another
	// creator would deadlock with it.
	var setup []string
	if len(months) > 0 {
		setup = append(setup, ensurePartitionsSQL(months))
	}
	table := pgx.Identifier{"traces"}
	if staged {
		setup = append(setup, createStagingSQL)
		table = pgx.Identifier{"pg_temp", stagingTable}
	}
	if len(setup) > 0 {
		// One round trip: without arguments pgx sends this as a simple query.
		if _, err := tx.Exec(ctx, strings.Join(setup, "; ")); err != nil {
			return fmt.Errorf("prepare batch: %w", err)
		}
	}
	if _, err := tx.CopyFrom(ctx, table, traceTableColumns, src); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	stored := src.batch
	if staged {
		if stored, err = s.insertFromStaging(ctx, tx, src); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	for _, step := range s.inTx {
		if err := step(ctx, tx, stored); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// PostgresTxStep is one piece of per-batch work inside a PostgresSink batch transaction.
// It runs after the batch's traces are in; stored holds the traces this transaction
// inserted, in batch order (a trace stored before, offered again, is not among them, so a
// step sees each trace once). It must not commit or roll back tx; its error rolls the whole
// batch back, and the sink returns it (wrapped) to be retried like any transient failure
// unless it is marked Permanent.
type PostgresTxStep func(ctx context.Context, tx pgx.Tx, stored []*Trace) error

// insertFromStaging moves the staged rows into traces and returns the traces it inserted
// (those not stored before). Without in-transaction steps nobody needs that list, and the
// insert skips the RETURNING.
func (s *PostgresSink) insertFromStaging(ctx context.Context, tx pgx.Tx, src *pgCopySource) ([]*Trace, error) {
	if len(s.inTx) == 0 {
		_, err := tx.Exec(ctx, insertFromStagingSQL)
		return nil, err
	}
	rows, err := tx.Query(ctx, insertFromStagingSQL+" RETURNING id::text")
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	inserted := make(map[string]bool, len(ids))
	for _, id := range ids {
		inserted[id] = true
	}
	var stored []*Trace
	for i, t := range src.batch {
		if inserted[src.ids[i].String()] {
			stored = append(stored, t)
		}
	}
	return stored, nil
}

// PostgreSQL error codes the sink acts on.
const (
	pgUniqueViolation = "23505"
	pgCheckViolation  = "23514" // also: no partition for a row
)

// pgPermanent reports whether PostgreSQL refused the data itself, so that the same batch
// would fail again: a data exception (class 22), an integrity violation (class 23) but the
// duplicate and the missing partition the sink handles, or a program limit (class 54).
// Any other failure (connection loss, a timeout, 40001/40P01, class 53, a server shutting
// down) is transient.
func pgPermanent(err error) bool {
	code := pgErrorCode(err)
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "22", "54":
		return true
	case "23":
		return code != pgUniqueViolation && code != pgCheckViolation
	}
	return false
}

func pgErrorCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Shutdown makes later WriteBatch calls fail. It does not close the pool, which the caller
// owns (and may share with other parts of the program). It is safe to call more than once.
func (s *PostgresSink) Shutdown(context.Context) error {
	s.closed.Store(true)
	return nil
}

// unknownMonths returns the months that the batch, or the present and the next month,
// fall in and whose partitions the sink has not seen created, in ascending order.
func (s *PostgresSink) unknownMonths(batch []*Trace) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var months []int
	add := func(m int) {
		if s.known[m] {
			return
		}
		for _, k := range months {
			if k == m {
				return
			}
		}
		months = append(months, m)
	}
	now := pgMonth(s.now())
	add(now)
	add(now + 1)
	for _, t := range batch {
		add(pgMonth(t.CreatedAt))
	}
	// A fixed order keeps concurrent creators from waiting on each other in a cycle.
	for i := 1; i < len(months); i++ {
		for j := i; j > 0 && months[j] < months[j-1]; j-- {
			months[j], months[j-1] = months[j-1], months[j]
		}
	}
	return months
}

func (s *PostgresSink) markKnown(months []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range months {
		s.known[m] = true
	}
}

func (s *PostgresSink) forgetMonths() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.known)
}

// pgMonth numbers the UTC month of t: year*12 + month-1.
func pgMonth(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// ensurePartitionsSQL is one statement creating the partitions of the months. The month
// dates are formatted here from integers, so they need no quoting beyond the literal's.
func ensurePartitionsSQL(months []int) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, m := range months {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "loom_ensure_trace_partition('%04d-%02d-01')", m/12, m%12+1)
	}
	return b.String()
}

// parseTraceID parses a UUID in the forms PostgreSQL's COPY would accept from pgx: 36
// characters with dashes, or 32 hex digits.
func parseTraceID(s string) ([16]byte, error) {
	var id [16]byte
	switch {
	case len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-':
		s = s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	case len(s) == 32:
	default:
		return id, errors.New("id is not a UUID")
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, errors.New("id is not a UUID")
	}
	return id, nil
}

// pgCopySource feeds a batch to CopyFrom, reusing one row of values (pgx encodes each row
// before asking for the next).
type pgCopySource struct {
	batch []*Trace
	ids   []pgtype.UUID
	i     int
	vals  []any
}

func (c *pgCopySource) Next() bool {
	c.i++
	return c.i < len(c.batch)
}

func (c *pgCopySource) Values() ([]any, error) {
	t := c.batch[c.i]
	v := c.vals
	v[0] = c.ids[c.i]
	v[1] = t.CreatedAt
	v[2] = t.TenantID
	v[3] = t.APIKeyID
	v[4] = t.RequestID
	v[5] = t.Model
	v[6] = t.ServedModel
	v[7] = t.Provider
	v[8] = t.Stream
	v[9] = int32(t.Status)
	v[10] = t.ErrorType
	v[11] = t.ClientAborted
	v[12] = t.PromptTokens
	v[13] = t.CompletionTokens
	v[14] = t.CachedTokens
	v[15] = t.ReasoningTokens
	v[16] = string(t.UsageSource)
	v[17] = t.CostMicroUSD
	v[18] = t.PriceVersion
	v[19] = t.LatencyUS
	v[20] = t.TTFBUS
	v[21] = t.OverheadUS
	v[22] = t.ResponseTruncated
	v[23] = sealedColumn(t.SealedRequest)
	v[24] = sealedColumn(t.SealedResponse)
	v[25] = int32(t.KeyVersion)
	v[26] = t.FieldsCut
	v[27] = int32(t.UpstreamRetries)
	v[28] = t.UsageMethod
	v[29] = t.CacheWrite5mTokens
	v[30] = t.CacheWrite1hTokens
	v[31] = t.AudioPromptTokens
	v[32] = t.AudioCompletionTokens
	v[33] = t.AcceptedPredictionTokens
	v[34] = t.RejectedPredictionTokens
	v[35] = t.ServiceTier
	v[36] = finishReasonsColumn(t.FinishReasons)
	return v, nil
}

func (c *pgCopySource) Err() error { return nil }

// finishReasonsColumn stores no finish reasons as an empty array: the column is NOT NULL,
// and pgx writes a nil slice as NULL.
func finishReasonsColumn(r []string) []string {
	if r == nil {
		return []string{}
	}
	return r
}

// sealedColumn stores an empty body as NULL, like a missing one.
func sealedColumn(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
