package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// VerifyOptions says what Verify checks and against what.
type VerifyOptions struct {
	DB      *sql.DB // the trace database (for PostgreSQL, stdlib.OpenDBFromPool)
	Dialect string  // Postgres or SQLite
	// Verifier is the pinned public key (note.NewVerifier of the vkey); every checkpoint
	// must carry its signature.
	Verifier note.Verifier
	// Checkpoints are the exported checkpoints (ReadDir of a DirExporter's directory).
	Checkpoints []CheckpointFile
	// Prefix of the origins; if empty, DefaultPrefix.
	Prefix string
	// Deep re-hashes every stored ciphertext; without it, the bodies' hashes recorded in the
	// leaves are trusted and only metadata is re-read.
	Deep bool
}

// Kinds of Failure.
const (
	BadSignature   = "bad-signature"   // a checkpoint does not verify with the pinned key
	BadCheckpoint  = "bad-checkpoint"  // a signed checkpoint that is not a Loom log's
	RowInserted    = "row-inserted"    // a trace row no log has a leaf for
	RowEdited      = "row-edited"      // a trace row that does not hash to its leaf
	BodyEdited     = "body-edited"     // a ciphertext that does not hash to its leaf's (Deep)
	RowDeleted     = "row-deleted"     // a leaf whose trace row is gone
	LeafDuplicated = "leaf-duplicated" // a second leaf for one trace
	LeavesMissing  = "leaves-missing"  // a gap in a log's leaf indexes
	LogTruncated   = "log-truncated"   // fewer leaves than an exported checkpoint's size
	LogDeleted     = "log-deleted"     // a checkpointed log with nothing left in the database
	RootMismatch   = "root-mismatch"   // the leaves' root at a checkpointed size is not the signed one
	AfterTombstone = "after-tombstone" // a leaf appended to a log after its tombstone
	BadHead        = "bad-head"        // a log head that disagrees with its leaves
)

// Failure is one thing Verify found wrong.
type Failure struct {
	Kind      string // one of the kinds above
	Log       string // the log, "<tenant>"/<month>, or the checkpoint file for a bad signature
	LeafIndex int64  // -1 when the failure is not about one leaf
	TraceID   string // empty when not about one trace
	Problem   string
}

func (f Failure) String() string {
	var b strings.Builder
	b.WriteString(f.Log)
	b.WriteString(": " + f.Kind)
	if f.LeafIndex >= 0 {
		fmt.Fprintf(&b, " leaf %d", f.LeafIndex)
	}
	if f.TraceID != "" {
		fmt.Fprintf(&b, " trace %s", f.TraceID)
	}
	b.WriteString(": ")
	b.WriteString(f.Problem)
	return b.String()
}

// LogStatus is one log as Verify saw it.
type LogStatus struct {
	Log          string
	Leaves       uint64 // leaves in the database
	Checkpointed uint64 // size of the largest exported checkpoint
	// Unanchored is the tail no exported checkpoint covers yet (Leaves - Checkpointed):
	// consistent with the database, but not yet provable to anyone who distrusts it.
	Unanchored uint64
	// Tombstoned is set when a signed tombstone says the log's traces were removed on
	// purpose: missing rows and leaves up to its size are then expected.
	Tombstoned bool
}

// Report is Verify's result; OK when Failures is empty.
type Report struct {
	Logs []LogStatus
	// Root is the deployment-wide root log (Log RootLogName): its events, and those under a
	// signed root checkpoint.
	Root     LogStatus
	Failures []Failure
	Traces   int // trace rows read
	// TracesV1 counts the trace rows that match a leaf of LeafVersion1 (appended before
	// version 2): the ledger covers their other columns, not those of version 2 only
	// (usage_method to finish_reasons).
	TracesV1 int
}

func (r *Report) OK() bool { return len(r.Failures) == 0 }

func (r *Report) fail(kind, log string, index int64, trace, format string, args ...any) {
	r.Failures = append(r.Failures, Failure{Kind: kind, Log: log, LeafIndex: index, TraceID: trace, Problem: fmt.Sprintf(format, args...)})
}

type storedLeaf struct {
	index            int64
	traceID          string
	hash, reqH, resH []byte
	seen             bool
}

type verifyLog struct {
	tenant, month string
	leaves        []*storedLeaf
	head          *struct {
		size int64
		root []byte
	}
	cps []signedCheckpoint
	end *logEnd // set when a tombstone or the root log says the log ends
}

type signedCheckpoint struct {
	name      string
	size      uint64
	root      []byte
	note      []byte
	tombstone bool
	// rootEvent: an EventLog of the root log rather than an exported file; anchored when a
	// signed root checkpoint covers it (an exported file always is).
	rootEvent, anchored bool
}

// openCheckpoints checks the files' signatures and sorts the good ones by log, the root
// log's apart; the bad ones are failures.
func openCheckpoints(files []CheckpointFile, v note.Verifier, prefix string) (cps map[[2]string][]signedCheckpoint, root []signedCheckpoint, bad []Failure) {
	cps = map[[2]string][]signedCheckpoint{}
	for _, f := range files {
		n, err := note.Open(f.Note, note.VerifierList(v))
		if err != nil {
			bad = append(bad, Failure{Kind: BadSignature, Log: f.Name, LeafIndex: -1,
				Problem: fmt.Sprintf("checkpoint signature does not verify with the pinned key: %v", err)})
			continue
		}
		origin, size, hash, tombstone, err := parseCheckpoint(n.Text)
		if err == nil {
			cp := signedCheckpoint{name: f.Name, size: size, root: hash, note: f.Note, tombstone: tombstone, anchored: true}
			if origin == RootOrigin(prefix) {
				root = append(root, cp)
				continue
			}
			var tenant, month string
			if tenant, month, err = parseOrigin(prefix, origin); err == nil {
				k := [2]string{tenant, month}
				cps[k] = append(cps[k], cp)
				continue
			}
		}
		bad = append(bad, Failure{Kind: BadCheckpoint, Log: f.Name, LeafIndex: -1,
			Problem: fmt.Sprintf("signed checkpoint unreadable: %v", err)})
	}
	return cps, root, bad
}

// Verify checks the database's logs against the exported checkpoints: every checkpoint's
// signature; every trace row's leaf recomputed from the row; every log's leaves contiguous
// from 0, each with its row; the root at every checkpointed size; the heads. It returns an
// error only when it could not read; what it found wrong is in the Report.
func Verify(ctx context.Context, o VerifyOptions) (*Report, error) {
	prefix := cmp.Or(o.Prefix, DefaultPrefix)
	rep := &Report{}
	logs := map[[2]string]*verifyLog{}
	get := func(tenant, month string) *verifyLog {
		k := [2]string{tenant, month}
		if logs[k] == nil {
			logs[k] = &verifyLog{tenant: tenant, month: month}
		}
		return logs[k]
	}

	cps, rootCps, bad := openCheckpoints(o.Checkpoints, o.Verifier, prefix)
	rep.Failures = append(rep.Failures, bad...)
	for k, list := range cps {
		get(k[0], k[1]).cps = list
	}

	if err := readHeads(ctx, o, get); err != nil {
		return nil, err
	}
	byTrace := map[string]*storedLeaf{}
	if err := readLeaves(ctx, o, func(tenant, month string, sl *storedLeaf) {
		l := get(tenant, month)
		l.leaves = append(l.leaves, sl)
		if prev := byTrace[sl.traceID]; prev != nil {
			rep.fail(LeafDuplicated, logName(tenant, month), sl.index, sl.traceID, "trace has a second leaf (first at index %d): a leaf was inserted", prev.index)
			return
		}
		byTrace[sl.traceID] = sl
	}); err != nil {
		return nil, err
	}
	if err := readTraces(ctx, o, func(l *Leaf, req, resp []byte, unreadable string) {
		rep.Traces++
		name := logName(l.TenantID, l.Month)
		sl := byTrace[l.TraceID]
		if sl == nil {
			rep.fail(RowInserted, name, -1, l.TraceID, "trace row is in no log: inserted outside the ledger")
			return
		}
		sl.seen = true
		copy(l.RequestHash[:], sl.reqH)
		copy(l.ResponseHash[:], sl.resH)
		if o.Deep {
			if h := sha256.Sum256(req); !bytes.Equal(h[:], sl.reqH) {
				rep.fail(BodyEdited, name, sl.index, l.TraceID, "request ciphertext differs from the hash its leaf commits to")
			}
			if h := sha256.Sum256(resp); !bytes.Equal(h[:], sl.resH) {
				rep.fail(BodyEdited, name, sl.index, l.TraceID, "response ciphertext differs from the hash its leaf commits to")
			}
		}
		if unreadable != "" {
			rep.fail(RowEdited, name, sl.index, l.TraceID, "trace row does not match its leaf: %s", unreadable)
			return
		}
		switch {
		case bytes.Equal(l.HashVersion(LeafVersion2), sl.hash):
		case bytes.Equal(l.HashVersion(LeafVersion1), sl.hash):
			// A row appended before leaf version 2. Accepting either is sound: the version
			// byte is the first byte of the hashed encoding, so a leaf of one version never
			// equals the other's recomputation (short of a SHA-256 collision). A v2 leaf
			// matches only a v2 recomputation, which covers every column, so an edit of a
			// v2 row, a v2-only column included, is caught; passing it off as a v1 row
			// would take replacing its stored leaf hash, which changes the log's root
			// (caught against the head and every checkpoint covering it). Only a row
			// whose leaf is v1 already has its v2-only columns uncovered, as it always had.
			rep.TracesV1++
		default:
			rep.fail(RowEdited, name, sl.index, l.TraceID, "trace row does not match its leaf: metadata or body hashes edited")
		}
	}); err != nil {
		return nil, err
	}

	rootHead, events, err := readRoot(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := checkRoot(rep, rootHead, events, rootCps, logs); err != nil {
		return nil, err
	}
	keys := make([][2]string, 0, len(logs))
	for k := range logs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	for _, k := range keys {
		if err := checkLog(rep, logs[k]); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func checkLog(rep *Report, l *verifyLog) error {
	name := logName(l.tenant, l.month)
	st := LogStatus{Log: name, Leaves: uint64(len(l.leaves))}
	end := l.end
	if end == nil {
		for _, cp := range l.cps {
			if cp.tombstone && (end == nil || cp.size > end.size) {
				end = &logEnd{size: cp.size, removed: true, what: "tombstone " + cp.name}
			}
		}
	}
	removed := func(index uint64) bool { return end != nil && end.removed && index < end.size }
	st.Tombstoned = end != nil && end.removed
	hashes := make([][]byte, 0, len(l.leaves))
	next := int64(0)
	for _, sl := range l.leaves {
		if sl.index != next {
			rep.fail(LeavesMissing, name, next, "", "leaves %d to %d are missing: deleted", next, sl.index-1)
		}
		next = sl.index + 1
		if end != nil && uint64(sl.index) >= end.size {
			rep.fail(AfterTombstone, name, sl.index, sl.traceID, "leaf appended after the log's end at size %d: %s", end.size, end.what)
		}
		if !sl.seen && !removed(uint64(sl.index)) {
			rep.fail(RowDeleted, name, sl.index, sl.traceID, "the leaf's trace row is missing: deleted")
		}
		hashes = append(hashes, sl.hash)
	}
	// By size; at one size, an exported file before a root log event saying the same.
	slices.SortStableFunc(l.cps, func(a, b signedCheckpoint) int { return cmp.Compare(a.size, b.size) })
	r := rangeFactory.NewEmptyRange(0)
	var beyond *signedCheckpoint // the largest statement of more leaves than there are
	for i, cp := range l.cps {
		if cp.anchored {
			st.Checkpointed = max(st.Checkpointed, cp.size)
		}
		if i > 0 && cp.size == l.cps[i-1].size && bytes.Equal(cp.root, l.cps[i-1].root) {
			continue // the same statement, checked once
		}
		if cp.size > uint64(len(hashes)) {
			if !st.Tombstoned {
				beyond = &l.cps[i]
			}
			continue // a tombstoned log: removed as it says
		}
		for r.End() < cp.size {
			if err := r.Append(hashes[r.End()], nil); err != nil {
				return err
			}
		}
		root, err := rangeRoot(r)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, cp.root) {
			rep.fail(RootMismatch, name, -1, "", "root of the first %d leaves differs from %s: leaves below %d were edited, reordered, removed or inserted", cp.size, describe(cp), cp.size)
		}
	}
	if beyond != nil {
		if len(hashes) == 0 && l.head == nil {
			rep.fail(LogDeleted, name, -1, "", "log of size %d (%s) is missing from the database: deleted without a tombstone", beyond.size, describe(*beyond))
		} else {
			rep.fail(LogTruncated, name, int64(len(hashes)), "", "%s has size %d but the log has %d leaves: leaves %d to %d deleted", describe(*beyond), beyond.size, len(hashes), len(hashes), beyond.size-1)
		}
	}
	if st.Leaves > st.Checkpointed {
		st.Unanchored = st.Leaves - st.Checkpointed
	}
	switch {
	case st.Tombstoned && l.head == nil:
		// what is left of a removed log may have no head
	case l.head == nil && len(hashes) > 0:
		rep.fail(BadHead, name, -1, "", "log head is missing")
	case l.head != nil:
		if l.head.size != int64(len(hashes)) {
			rep.fail(BadHead, name, -1, "", "head says %d leaves, the database holds %d", l.head.size, len(hashes))
		}
		if root, err := rootOf(hashes); err != nil {
			return err
		} else if l.head.size > 0 && !bytes.Equal(root, l.head.root) {
			rep.fail(BadHead, name, -1, "", "head root differs from the root of the stored leaves")
		}
	}
	rep.Logs = append(rep.Logs, st)
	return nil
}

// describe names a statement of a log's size in a report.
func describe(cp signedCheckpoint) string {
	if cp.rootEvent {
		if cp.anchored {
			return cp.name + " (under a signed root checkpoint)"
		}
		return cp.name + " (not yet under a signed root checkpoint)"
	}
	return "checkpoint " + cp.name
}

func readHeads(ctx context.Context, o VerifyOptions, get func(tenant, month string) *verifyLog) error {
	rows, err := o.DB.QueryContext(ctx, "SELECT tenant_id, month, size, root FROM ledger_logs")
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tenant, month string
		h := &struct {
			size int64
			root []byte
		}{}
		if err := rows.Scan(&tenant, &month, &h.size, &h.root); err != nil {
			return fmt.Errorf("ledger: verify: %w", err)
		}
		get(tenant, month).head = h
	}
	return rows.Err()
}

func readLeaves(ctx context.Context, o VerifyOptions, each func(tenant, month string, sl *storedLeaf)) error {
	id := "trace_id"
	if o.Dialect == Postgres {
		id = "trace_id::text"
	}
	rows, err := o.DB.QueryContext(ctx, "SELECT tenant_id, month, leaf_index, "+id+
		", leaf_hash, request_hash, response_hash FROM ledger_leaves ORDER BY tenant_id, month, leaf_index")
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tenant, month string
		sl := &storedLeaf{}
		if err := rows.Scan(&tenant, &month, &sl.index, &sl.traceID, &sl.hash, &sl.reqH, &sl.resH); err != nil {
			return fmt.Errorf("ledger: verify: %w", err)
		}
		each(tenant, month, sl)
	}
	return rows.Err()
}

// traceColumns are read for every leaf; the sealed bodies only with Deep.
const traceColumns = `tenant_id, api_key_id, request_id, model, served_model, provider, stream, status,
	error_type, client_aborted, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
	usage_source, cost_micro_usd, price_version, latency_us, ttfb_us, overhead_us,
	response_truncated, fields_cut, upstream_retries, key_version,
	usage_method, cache_write_5m_tokens, cache_write_1h_tokens, audio_prompt_tokens,
	audio_completion_tokens, accepted_prediction_tokens, rejected_prediction_tokens, service_tier`

// finishReasonsColumn reads finish_reasons as a JSON array of strings: how SQLite stores
// it, and how PostgreSQL renders its text[].
var finishReasonsColumn = map[string]string{Postgres: "array_to_json(finish_reasons)::text", SQLite: "finish_reasons"}

// readTraces reads every trace row as the Leaf it should have (without the body hashes,
// which are the leaf's to say) and, with Deep, its sealed bodies. unreadable is set when a
// column holds what no trace could have stored (then l is incomplete).
func readTraces(ctx context.Context, o VerifyOptions, each func(l *Leaf, req, resp []byte, unreadable string)) error {
	q := "SELECT id, created_at, " + traceColumns + ", " + finishReasonsColumn[o.Dialect]
	if o.Dialect == Postgres {
		q = "SELECT id::text, created_at, " + traceColumns + ", " + finishReasonsColumn[o.Dialect]
	}
	if o.Deep {
		q += ", request_sealed, response_sealed"
	}
	rows, err := o.DB.QueryContext(ctx, q+" FROM traces")
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Leaf
		var created any
		var cost sql.NullInt64
		var req, resp []byte
		var finish string
		dest := []any{&l.TraceID, &created, &l.TenantID, &l.APIKeyID, &l.RequestID, &l.Model, &l.ServedModel,
			&l.Provider, &l.Stream, &l.Status, &l.ErrorType, &l.ClientAborted, &l.PromptTokens,
			&l.CompletionTokens, &l.CachedTokens, &l.ReasoningTokens, &l.UsageSource, &cost,
			&l.PriceVersion, &l.LatencyUS, &l.TTFBUS, &l.OverheadUS, &l.ResponseTruncated, &l.FieldsCut, &l.UpstreamRetries, &l.KeyVersion,
			&l.UsageMethod, &l.CacheWrite5mTokens, &l.CacheWrite1hTokens, &l.AudioPromptTokens,
			&l.AudioCompletionTokens, &l.AcceptedPredictionTokens, &l.RejectedPredictionTokens, &l.ServiceTier, &finish}
		if o.Deep {
			dest = append(dest, &req, &resp)
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("ledger: verify: %w", err)
		}
		switch c := created.(type) {
		case time.Time:
			l.CreatedAtUS = c.UnixMicro()
		case int64:
			l.CreatedAtUS = c
		default:
			return fmt.Errorf("ledger: verify: trace %s: created_at of type %T", l.TraceID, created)
		}
		l.Month = Month(time.UnixMicro(l.CreatedAtUS))
		if cost.Valid {
			l.CostMicroUSD = &cost.Int64
		}
		var unreadable string
		if fr, ferr := parseFinishReasons(finish); ferr != nil {
			unreadable = ferr.Error()
		} else {
			l.FinishReasons = fr
		}
		each(&l, req, resp, unreadable)
	}
	return rows.Err()
}

// parseFinishReasons reads the finish_reasons column (as finishReasonsColumn renders it):
// a JSON array of strings, valid UTF-8. A sink stores nothing else there; anything else
// (null elements, nested arrays, invalid UTF-8 that decoding would quietly replace) is an
// error rather than a value that might hash like the original.
func parseFinishReasons(col string) ([]string, error) {
	if !utf8.ValidString(col) {
		return nil, fmt.Errorf("finish_reasons %.64q is not valid UTF-8", col)
	}
	if rs, ok := plainFinishReasons(col); ok {
		return rs, nil
	}
	var rs []*string
	if json.Unmarshal([]byte(col), &rs) != nil || rs == nil {
		return nil, fmt.Errorf("finish_reasons %.64q is not a JSON array of strings", col)
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		if r == nil {
			return nil, fmt.Errorf("finish_reasons %.64q holds a null", col)
		}
		out[i] = *r
	}
	return out, nil
}

// plainFinishReasons is parseFinishReasons' fast path for what the sinks write: "[]", or
// strings without escapes, `["stop","length"]`. ok is false for anything else, which
// encoding/json then reads (or refuses).
func plainFinishReasons(col string) (rs []string, ok bool) {
	if col == "[]" {
		return nil, true
	}
	if len(col) < 4 || col[:2] != `["` || col[len(col)-2:] != `"]` {
		return nil, false
	}
	inner := col[2 : len(col)-2]
	for i := 0; i < len(inner); i++ {
		if c := inner[i]; c < 0x20 || c == '\\' {
			return nil, false
		}
	}
	rs = strings.Split(inner, `","`)
	for _, r := range rs {
		if strings.IndexByte(r, '"') >= 0 {
			return nil, false
		}
	}
	return rs, true
}
