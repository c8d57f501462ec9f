package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Dialects of the database a Checkpointer or Verify reads (the names of package
// migrations).
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// DefaultPrefix starts every log's origin when none is configured.
const DefaultPrefix = "loom"

// Origin is the checkpoint origin line of a log: prefix, the tenant id path-escaped (so a
// tenant id can hold any byte but stays one line), and the month: "loom/acme/2026-12".
func Origin(prefix, tenant, month string) string {
	return prefix + "/" + url.PathEscape(tenant) + "/" + month
}

// parseOrigin is the inverse of Origin.
func parseOrigin(prefix, origin string) (tenant, month string, err error) {
	rest, ok := strings.CutPrefix(origin, prefix+"/")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return "", "", fmt.Errorf("origin %q is not a log of %q", origin, prefix)
	}
	if tenant, err = url.PathUnescape(rest[:i]); err != nil {
		return "", "", fmt.Errorf("origin %q: %w", origin, err)
	}
	return tenant, rest[i+1:], nil
}

// Checkpoint is one signed statement of a log's size and root: a tenant log's, or the
// deployment-wide root log's (Origin RootOrigin, TenantID and Month empty).
type Checkpoint struct {
	Origin   string
	TenantID string
	Month    string
	Size     uint64
	Root     []byte
	// Tombstone marks the log's last checkpoint before its traces are removed on purpose
	// (a partition drop, a tenant's hard delete): see Tombstone.
	Tombstone bool
	// Note is the signed note: the C2SP tlog-checkpoint body ("<origin>\n<size>\n<base64
	// root>\n"), a blank line, and the Ed25519 signature line.
	Note []byte
}

// tombstoneLine is the checkpoint extension line of a tombstone.
const tombstoneLine = "loom-tombstone"

func checkpointText(origin string, size uint64, root []byte, tombstone bool) string {
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root))
	if tombstone {
		text += tombstoneLine + "\n"
	}
	return text
}

// parseCheckpoint reads the body of an opened note; an extension line tombstoneLine marks
// a tombstone.
func parseCheckpoint(text string) (origin string, size uint64, root []byte, tombstone bool, err error) {
	origin, size, root, err = parseCheckpointLines(text)
	return origin, size, root, strings.Contains(text, "\n"+tombstoneLine+"\n"), err
}

func parseCheckpointLines(text string) (origin string, size uint64, root []byte, err error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return "", 0, nil, errors.New("checkpoint body has fewer than three lines")
	}
	if size, err = strconv.ParseUint(lines[1], 10, 64); err != nil {
		return "", 0, nil, fmt.Errorf("checkpoint size: %w", err)
	}
	if root, err = base64.StdEncoding.DecodeString(lines[2]); err != nil || len(root) != 32 {
		return "", 0, nil, fmt.Errorf("checkpoint root %q is not a base64 SHA-256 hash", lines[2])
	}
	return lines[0], size, root, nil
}

// GenerateKey makes a new Ed25519 signing key for checkpoints named name (the key name in
// every signature line), in the note package's encodings: skey (secret; keep it in the
// server's configuration, never in the database) and vkey (public; pin it in verifiers).
func GenerateKey(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("ledger: generate key: %w", err)
	}
	return skey, vkey, nil
}

// VerifierKey is the public verifier key of the signing key skey.
func VerifierKey(skey string) (string, error) {
	// skey is "PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>"; note.NewSigner checks it.
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("ledger: signing key: %w", err)
	}
	parts := strings.SplitN(skey, "+", 5) // the key data is base64, which may hold "+"
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		return "", errors.New("ledger: signing key is not an Ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("ledger: verifier key: %w", err)
	}
	return vkey, nil
}

// Exporter takes signed checkpoints off the database, to somewhere its writers cannot
// rewrite. Export must be idempotent for the same checkpoint (a checkpointer that crashed
// after exporting exports it again) and return only once the checkpoint is kept.
type Exporter interface {
	Export(ctx context.Context, c Checkpoint) error
}

// ExportFunc is an Exporter in a func, for an embedder's own store.
type ExportFunc func(ctx context.Context, c Checkpoint) error

func (f ExportFunc) Export(ctx context.Context, c Checkpoint) error { return f(ctx, c) }

// DirExporter writes each checkpoint to its own file, Dir/<escaped origin>/<size>.note,
// never replacing a file: an append-only directory (ship it, or mount it, off the database
// host). ReadDir reads it back for Verify.
type DirExporter struct{ Dir string }

func (d DirExporter) Export(_ context.Context, c Checkpoint) error {
	dir := filepath.Join(d.Dir, url.PathEscape(c.Origin))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ledger: export: %w", err)
	}
	kind := ""
	if c.Tombstone {
		kind = ".tombstone"
	}
	path := filepath.Join(dir, fmt.Sprintf("%020d%s.note", c.Size, kind))
	if old, err := os.ReadFile(path); err == nil {
		if parseNoteBody(old) == parseNoteBody(c.Note) {
			return nil // exported before (same statement; signatures may differ in bytes)
		}
		return fmt.Errorf("ledger: export: %s exists with another statement", path)
	}
	tmp := path + ".tmp"
	if err := writeSync(tmp, c.Note); err != nil {
		return fmt.Errorf("ledger: export: %w", err)
	}
	// Link fails if path appeared meanwhile: nothing exported is ever replaced.
	if err := os.Link(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ledger: export: %w", err)
	}
	return os.Remove(tmp)
}

func parseNoteBody(n []byte) string {
	body, _, _ := bytes.Cut(n, []byte("\n\n"))
	return string(body)
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriterExporter writes each checkpoint's note to W (for example stdout, into a log
// collector), followed by a blank line.
type WriterExporter struct{ W io.Writer }

func (w WriterExporter) Export(_ context.Context, c Checkpoint) error {
	if _, err := fmt.Fprintf(w.W, "%s\n", c.Note); err != nil {
		return fmt.Errorf("ledger: export: %w", err)
	}
	return nil
}

// CheckpointFile is one exported checkpoint as a verifier reads it; Name says where it came
// from in reports.
type CheckpointFile struct {
	Name string
	Note []byte
}

// ReadDir reads the checkpoints a DirExporter wrote under dir.
func ReadDir(dir string) ([]CheckpointFile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*.note"))
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	var files []CheckpointFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		files = append(files, CheckpointFile{Name: p, Note: b})
	}
	return files, nil
}

// Checkpointer signs and exports a checkpoint for every log that grew, every Interval, and
// one for the root log after recording in it every tenant log's new size and root. On
// PostgreSQL one replica at a time does it: the one holding a session advisory lock
// (pg_try_advisory_lock); the others wait their turn. On SQLite the process is the writer.
type Checkpointer struct {
	DB       *sql.DB // the trace database (for PostgreSQL, stdlib.OpenDBFromPool)
	Dialect  string  // Postgres or SQLite
	Signer   note.Signer
	Exporter Exporter
	// Prefix starts every origin; if empty, DefaultPrefix.
	Prefix string
	// Interval between rounds; if zero, 5s.
	Interval time.Duration
	// Logger reports failed rounds; if nil, they are not logged (Run retries each round).
	Logger *slog.Logger
	// Now stamps root log events; if nil, time.Now.
	Now func() time.Time
}

func (c *Checkpointer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checkpointer) prefix() string {
	if c.Prefix != "" {
		return c.Prefix
	}
	return DefaultPrefix
}

// checkpointLock is the advisory lock key electing the PostgreSQL checkpoint writer.
const checkpointLock = 0x4c6f6f6d4c656467 // "LoomLedg"

// Run checkpoints every Interval until ctx is done, and returns ctx's error.
func (c *Checkpointer) Run(ctx context.Context) error {
	every := c.Interval
	if every <= 0 {
		every = 5 * time.Second
	}
	var leader *sql.Conn // PostgreSQL: the connection holding the advisory lock
	defer func() {
		if leader != nil {
			leader.Close()
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if c.Dialect == Postgres && leader == nil {
			conn, ok, err := c.elect(ctx)
			if err != nil && c.Logger != nil {
				c.Logger.Warn("ledger: checkpoint election", "err", err)
			}
			if ok {
				leader = conn
			}
		}
		if c.Dialect != Postgres || leader != nil {
			if _, err := c.Once(ctx); err != nil && ctx.Err() == nil {
				if c.Logger != nil {
					c.Logger.Warn("ledger: checkpoint", "err", err)
				}
				if leader != nil && leader.PingContext(ctx) != nil {
					leader.Close() // the lock went with the connection; elect again
					leader = nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (c *Checkpointer) elect(ctx context.Context) (*sql.Conn, bool, error) {
	conn, err := c.DB.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", int64(checkpointLock)).Scan(&ok); err != nil || !ok {
		conn.Close()
		return nil, false, err
	}
	return conn, true, nil
}

// Once records in the root log every tenant log that grew, then signs and exports a
// checkpoint for every log that grew since its last export, the root log's last, and
// returns them. Run calls it; a caller can too (before a backup, in tests). It does not
// take the PostgreSQL election lock: run it where no Run is running, or accept that two
// writers may export the same checkpoints (which exporters tolerate).
func (c *Checkpointer) Once(ctx context.Context) ([]Checkpoint, error) {
	if err := recordLogs(ctx, c.DB, c.Dialect == Postgres, c.now()); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: root log: %w", err)
	}
	if err := c.durable(ctx); err != nil {
		return nil, err
	}
	rows, err := c.DB.QueryContext(ctx, "SELECT tenant_id, month, size, root FROM ledger_logs WHERE size > exported_size ORDER BY tenant_id, month")
	if err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: %w", err)
	}
	var cps []Checkpoint
	for rows.Next() {
		var cp Checkpoint
		var size int64
		if err := rows.Scan(&cp.TenantID, &cp.Month, &size, &cp.Root); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ledger: checkpoint: %w", err)
		}
		cp.Size = uint64(size)
		cps = append(cps, cp)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: %w", err)
	}
	update := "UPDATE ledger_logs SET exported_size = $1 WHERE tenant_id = $2 AND month = $3 AND exported_size < $1"
	if c.Dialect == SQLite {
		update = "UPDATE ledger_logs SET exported_size = ?1 WHERE tenant_id = ?2 AND month = ?3 AND exported_size < ?1"
	}
	for i := range cps {
		cp := &cps[i]
		cp.Origin = Origin(c.prefix(), cp.TenantID, cp.Month)
		if err := c.export(ctx, cp); err != nil {
			return nil, err
		}
		if _, err := c.DB.ExecContext(ctx, update, int64(cp.Size), cp.TenantID, cp.Month); err != nil {
			return nil, fmt.Errorf("ledger: checkpoint: %w", err)
		}
	}
	root, err := c.exportRoot(ctx)
	if err != nil || root == nil {
		return cps, err
	}
	return append(cps, *root), nil
}

// durable makes every committed SQLite transaction durable (a FULL WAL checkpoint) before
// anything is exported about it; PostgreSQL commits the ledger synchronously already.
func (c *Checkpointer) durable(ctx context.Context) error {
	if c.Dialect != SQLite {
		return nil
	}
	if _, err := c.DB.ExecContext(ctx, "PRAGMA wal_checkpoint(FULL)"); err != nil {
		return fmt.Errorf("ledger: checkpoint: %w", err)
	}
	return nil
}

// exportRoot signs and exports the root log's checkpoint if it grew since its last export
// (nil if not).
func (c *Checkpointer) exportRoot(ctx context.Context) (*Checkpoint, error) {
	var size, exported int64
	cp := &Checkpoint{Origin: RootOrigin(c.prefix())}
	if err := c.DB.QueryRowContext(ctx, "SELECT size, root, exported_size FROM ledger_root WHERE id = 1").Scan(&size, &cp.Root, &exported); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: root log: %w", err)
	}
	if size <= exported {
		return nil, nil
	}
	cp.Size = uint64(size)
	if err := c.export(ctx, cp); err != nil {
		return nil, err
	}
	update := "UPDATE ledger_root SET exported_size = $1 WHERE id = 1 AND exported_size < $1"
	if c.Dialect == SQLite {
		update = "UPDATE ledger_root SET exported_size = ?1 WHERE id = 1 AND exported_size < ?1"
	}
	if _, err := c.DB.ExecContext(ctx, update, size); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: root log: %w", err)
	}
	return cp, nil
}

func (c *Checkpointer) export(ctx context.Context, cp *Checkpoint) error {
	signed, err := note.Sign(&note.Note{Text: checkpointText(cp.Origin, cp.Size, cp.Root, cp.Tombstone)}, c.Signer)
	if err != nil {
		return fmt.Errorf("ledger: sign checkpoint: %w", err)
	}
	cp.Note = signed
	return c.Exporter.Export(ctx, *cp)
}

// Tombstone records and signs the removal of every log of tenant (all months if month is
// empty), or of month (all tenants if tenant is empty): run it before dropping a month's
// partition or removing a tenant's traces. In one transaction it appends to the root log a
// seal of each such log (its final size and root) and the removal (a partition drop, a
// tenant deletion, or one log's drop); then it signs and exports each log's final
// checkpoint, marked "loom-tombstone", and the root log's checkpoint, and returns them
// (the root log's last). Verify then accepts the removed logs' missing rows and leaves,
// still checks whatever is left against the signed roots, and reports a leaf appended
// after the tombstone. Removing traces without a tombstone is reported as deleted rows or
// a deleted log.
func (c *Checkpointer) Tombstone(ctx context.Context, tenant, month string) ([]Checkpoint, error) {
	if tenant == "" && month == "" {
		return nil, errors.New("ledger: tombstone: a tenant, a month or both")
	}
	tx, err := c.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("ledger: tombstone: %w", err)
	}
	defer tx.Rollback()
	events, err := recordRemoval(ctx, sqlTx(tx, c.Dialect == Postgres), tenant, month, c.now())
	if err != nil {
		return nil, fmt.Errorf("ledger: tombstone: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("ledger: tombstone: %w", err)
	}
	if err := c.durable(ctx); err != nil {
		return nil, err
	}
	var cps []Checkpoint
	for _, e := range events {
		if e.Kind != EventSeal {
			continue
		}
		cp := Checkpoint{Origin: Origin(c.prefix(), e.TenantID, e.Month), TenantID: e.TenantID, Month: e.Month,
			Size: e.Size, Root: e.Root, Tombstone: true}
		if err := c.export(ctx, &cp); err != nil {
			return nil, err
		}
		cps = append(cps, cp)
	}
	root, err := c.exportRoot(ctx)
	if err != nil {
		return nil, err
	}
	if root != nil {
		cps = append(cps, *root)
	}
	return cps, nil
}
