package ledger

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Kinds of RootEvent.
const (
	// EventLog: a tenant log had Size leaves and root Root (recorded at each checkpoint round
	// for every log that grew).
	EventLog = "log"
	// EventSeal: the tenant log's final Size and Root; no leaf may follow. A removal event
	// follows its seals in the same transaction.
	EventSeal = "seal"
	// EventPartitionDrop: every tenant's traces of Month are removed on purpose.
	EventPartitionDrop = "partition-drop"
	// EventTenantDeletion: every month's traces of TenantID are removed on purpose (a hard
	// delete).
	EventTenantDeletion = "tenant-deletion"
	// EventLogDrop: the traces of one (TenantID, Month) log are removed on purpose.
	EventLogDrop = "log-drop"
)

// RootEventVersion is the version byte every root event encoding starts with.
const RootEventVersion = 1

// RootLogName names the root log in reports (a tenant log's name is quoted, so the two
// never collide).
const RootLogName = "root"

// RootOrigin is the checkpoint origin of the deployment-wide root log: "<prefix>/root" (a
// tenant log's origin always has a tenant and a month after the prefix).
func RootOrigin(prefix string) string { return prefix + "/" + RootLogName }

// RootEvent is one leaf of the deployment-wide root log.
type RootEvent struct {
	Kind     string // one of the Event kinds
	TenantID string // empty for a partition drop
	Month    string // empty for a tenant deletion
	Size     uint64 // EventLog and EventSeal: the tenant log's size; else 0
	Root     []byte // EventLog and EventSeal: the tenant log's root; else empty
	AtUS     int64  // when it was recorded, unix microseconds
}

// Encode is the event's canonical bytes: the version byte, then the fields in declaration
// order, strings and the root length-prefixed (uint32, big-endian), integers 8 bytes
// big-endian.
func (e *RootEvent) Encode() []byte {
	b := make([]byte, 0, 96)
	b = append(b, RootEventVersion)
	for _, s := range []string{e.Kind, e.TenantID, e.Month} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, e.Size)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Root)))
	b = append(b, e.Root...)
	return binary.BigEndian.AppendUint64(b, uint64(e.AtUS))
}

// Hash is the event's RFC 6962 leaf hash.
func (e *RootEvent) Hash() []byte { return rfc6962.DefaultHasher.HashLeaf(e.Encode()) }

// removes reports whether e is a removal event that covers the log (tenant, month).
func (e *RootEvent) removes(tenant, month string) bool {
	switch e.Kind {
	case EventPartitionDrop:
		return e.Month == month
	case EventTenantDeletion:
		return e.TenantID == tenant
	case EventLogDrop:
		return e.TenantID == tenant && e.Month == month
	}
	return false
}

// dbTx is the little of a transaction the root log needs, on either store. Queries are
// written with ? placeholders; every query the root log makes reads rows of (tenant,
// month, size, hash bytes).
type dbTx struct {
	postgres bool
	exec     func(ctx context.Context, q string, args ...any) error
	query    func(ctx context.Context, q string, args ...any) ([]logRow, error)
}

// logRow is one tenant log head (or the root head) as the root log reads it.
type logRow struct {
	tenant, month string
	size          int64
	hash          []byte
}

// rebind turns ? placeholders into PostgreSQL's $n.
func rebind(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

type scanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func scanLogRows(rows scanner) ([]logRow, error) {
	var out []logRow
	for rows.Next() {
		var r logRow
		if err := rows.Scan(&r.tenant, &r.month, &r.size, &r.hash); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func pgxTx(tx pgx.Tx) dbTx {
	return dbTx{
		postgres: true,
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := tx.Exec(ctx, rebind(q), args...)
			return err
		},
		query: func(ctx context.Context, q string, args ...any) ([]logRow, error) {
			rows, err := tx.Query(ctx, rebind(q), args...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			return scanLogRows(rows)
		},
	}
}

func sqlTx(tx *sql.Tx, postgres bool) dbTx {
	re := func(q string) string { return q }
	if postgres {
		re = rebind
	}
	return dbTx{
		postgres: postgres,
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, re(q), args...)
			return err
		},
		query: func(ctx context.Context, q string, args ...any) ([]logRow, error) {
			rows, err := tx.QueryContext(ctx, re(q), args...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			return scanLogRows(rows)
		},
	}
}

// lockRoot takes the root log's head for this transaction (on SQLite, the write lock,
// before anything is read) and makes the commit durable on PostgreSQL.
func lockRoot(ctx context.Context, tx dbTx) (size int64, rng []byte, err error) {
	if tx.postgres {
		if err := tx.exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
			return 0, nil, err
		}
	} else if err := tx.exec(ctx, "UPDATE ledger_root SET size = size WHERE id = 1"); err != nil {
		return 0, nil, err
	}
	q := "SELECT '', '', size, range_hashes FROM ledger_root WHERE id = 1"
	if tx.postgres {
		q += " FOR UPDATE"
	}
	rows, err := tx.query(ctx, q)
	if err != nil {
		return 0, nil, err
	}
	if len(rows) != 1 {
		return 0, nil, errors.New("root log head is missing")
	}
	return rows[0].size, rows[0].hash, nil
}

// appendRoot appends events to the root log inside tx, after lockRoot.
func appendRoot(ctx context.Context, tx dbTx, size int64, rng []byte, events []RootEvent) error {
	if len(events) == 0 {
		return nil
	}
	hashes := make([][]byte, len(events))
	for i := range events {
		e := &events[i]
		if e.Root == nil {
			e.Root = []byte{}
		}
		hashes[i] = e.Hash()
		if err := tx.exec(ctx, `INSERT INTO ledger_root_events (event_index, kind, tenant_id, month, size, root, at_us, leaf_hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, size+int64(i), e.Kind, e.TenantID, e.Month, int64(e.Size), e.Root, e.AtUS, hashes[i]); err != nil {
			return err
		}
	}
	newRange, root, err := extendRange(size, rng, hashes)
	if err != nil {
		return err
	}
	return tx.exec(ctx, "UPDATE ledger_root SET size = ?, range_hashes = ?, root = ? WHERE id = 1", size+int64(len(events)), newRange, root)
}

// recordLogs appends an EventLog for every tenant log that grew since the root log last
// recorded it, in one transaction of db.
func recordLogs(ctx context.Context, db *sql.DB, postgres bool, at time.Time) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	t := sqlTx(tx, postgres)
	size, rng, err := lockRoot(ctx, t)
	if err != nil {
		return err
	}
	rows, err := t.query(ctx, "SELECT tenant_id, month, size, root FROM ledger_logs WHERE size > rooted_size ORDER BY tenant_id, month")
	if err != nil {
		return err
	}
	var events []RootEvent
	for _, r := range rows {
		events = append(events, RootEvent{Kind: EventLog, TenantID: r.tenant, Month: r.month, Size: uint64(r.size), Root: r.hash, AtUS: at.UnixMicro()})
	}
	if len(events) == 0 {
		return nil
	}
	if err := appendRoot(ctx, t, size, rng, events); err != nil {
		return err
	}
	for _, e := range events {
		if err := t.exec(ctx, "UPDATE ledger_logs SET rooted_size = ? WHERE tenant_id = ? AND month = ? AND rooted_size < ?",
			int64(e.Size), e.TenantID, e.Month, int64(e.Size)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// recordRemoval appends, inside tx, a seal of every log of tenant (all months if month is
// empty) or of month (all tenants if tenant is empty), then the removal event. The sealed
// log heads stay locked until tx ends, so no batch slips in between the seal and the
// removal.
func recordRemoval(ctx context.Context, tx dbTx, tenant, month string, at time.Time) ([]RootEvent, error) {
	removal := RootEvent{TenantID: tenant, Month: month, AtUS: at.UnixMicro()}
	switch {
	case tenant != "" && month != "":
		removal.Kind = EventLogDrop
	case tenant != "":
		removal.Kind = EventTenantDeletion
	case month != "":
		removal.Kind = EventPartitionDrop
	default:
		return nil, errors.New("a tenant, a month or both")
	}
	size, rng, err := lockRoot(ctx, tx)
	if err != nil {
		return nil, err
	}
	q := "SELECT tenant_id, month, size, root FROM ledger_logs WHERE (? = '' OR tenant_id = ?) AND (? = '' OR month = ?) ORDER BY tenant_id, month"
	if tx.postgres {
		q = `SELECT tenant_id, month, size, root FROM ledger_logs WHERE (?::text = '' OR tenant_id = ?) AND (?::text = '' OR month = ?)
			ORDER BY tenant_id COLLATE "C", month FOR UPDATE`
	}
	rows, err := tx.query(ctx, q, tenant, tenant, month, month)
	if err != nil {
		return nil, err
	}
	var events []RootEvent
	for _, r := range rows {
		if r.size == 0 {
			r.hash = rfc6962.DefaultHasher.EmptyRoot()
		}
		events = append(events, RootEvent{Kind: EventSeal, TenantID: r.tenant, Month: r.month, Size: uint64(r.size), Root: r.hash, AtUS: removal.AtUS})
	}
	events = append(events, removal)
	if err := appendRoot(ctx, tx, size, rng, events); err != nil {
		return nil, err
	}
	for _, e := range events[:len(events)-1] {
		if err := tx.exec(ctx, "UPDATE ledger_logs SET rooted_size = ? WHERE tenant_id = ? AND month = ?", int64(e.Size), e.TenantID, e.Month); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// RecordTenantDeletionPostgres records a tenant's hard delete in the root log, inside tx,
// the transaction that deletes the tenant (so both commit or neither): a seal of each of
// the tenant's logs (its final size and root; the heads stay locked until tx ends), then a
// tenant-deletion event, at at. The next checkpoint round signs them. Verify then accepts
// the tenant's missing traces (and leaves, if they are deleted too), still checks what is
// left against the seals, and reports any leaf appended after them. Call it before
// deleting the tenant's traces, in the same transaction.
func RecordTenantDeletionPostgres(ctx context.Context, tx pgx.Tx, tenantID string, at time.Time) error {
	if tenantID == "" {
		return errors.New("ledger: record tenant deletion: empty tenant id")
	}
	if _, err := recordRemoval(ctx, pgxTx(tx), tenantID, "", at); err != nil {
		return fmt.Errorf("ledger: record tenant deletion: %w", err)
	}
	return nil
}

// RecordTenantDeletionSQLite is RecordTenantDeletionPostgres for the SQLite store (with
// sqlx, pass the *sqlx.Tx's embedded *sql.Tx).
func RecordTenantDeletionSQLite(ctx context.Context, tx *sql.Tx, tenantID string, at time.Time) error {
	if tenantID == "" {
		return errors.New("ledger: record tenant deletion: empty tenant id")
	}
	if _, err := recordRemoval(ctx, sqlTx(tx, false), tenantID, "", at); err != nil {
		return fmt.Errorf("ledger: record tenant deletion: %w", err)
	}
	return nil
}
