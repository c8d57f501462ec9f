package ledger

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
)

// rootEventRow is one stored root log event.
type rootEventRow struct {
	index int64
	ev    RootEvent
	hash  []byte // as stored
}

// logEnd is where a tenant log ends on purpose: a seal (no leaf after size) and, when
// removed, the removal of its traces (missing rows and leaves below size are expected).
type logEnd struct {
	size    uint64
	removed bool
	what    string // for reports: which tombstone or root log events say so
}

func readRoot(ctx context.Context, o VerifyOptions) (head *logRow, events []rootEventRow, err error) {
	rows, err := o.DB.QueryContext(ctx, "SELECT size, root FROM ledger_root WHERE id = 1")
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: verify: root log: %w", err)
	}
	for rows.Next() {
		head = &logRow{}
		if err := rows.Scan(&head.size, &head.hash); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("ledger: verify: root log: %w", err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ledger: verify: root log: %w", err)
	}
	rows, err = o.DB.QueryContext(ctx, "SELECT event_index, kind, tenant_id, month, size, root, at_us, leaf_hash FROM ledger_root_events ORDER BY event_index")
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: verify: root log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r rootEventRow
		var size int64
		if err := rows.Scan(&r.index, &r.ev.Kind, &r.ev.TenantID, &r.ev.Month, &size, &r.ev.Root, &r.ev.AtUS, &r.hash); err != nil {
			return nil, nil, fmt.Errorf("ledger: verify: root log: %w", err)
		}
		r.ev.Size = uint64(size)
		events = append(events, r)
	}
	return head, events, rows.Err()
}

// checkRoot checks the root log like a tenant log (each event recomputed from its row,
// contiguous, the root at every signed root checkpoint, the head), then hands its events to
// the tenant logs: each EventLog is one more statement of a log's size and root to check,
// anchored when a signed root checkpoint covers it; seals and removals say where a log ends.
func checkRoot(rep *Report, head *logRow, events []rootEventRow, cps []signedCheckpoint, logs map[[2]string]*verifyLog) error {
	get := func(tenant, month string) *verifyLog {
		k := [2]string{tenant, month}
		if logs[k] == nil {
			logs[k] = &verifyLog{tenant: tenant, month: month}
		}
		return logs[k]
	}
	st := LogStatus{Log: RootLogName, Leaves: uint64(len(events))}
	hashes := make([][]byte, 0, len(events))
	next := int64(0)
	for i := range events {
		r := &events[i]
		if r.index != next {
			rep.fail(LeavesMissing, RootLogName, next, "", "root log events %d to %d are missing: deleted", next, r.index-1)
		}
		next = r.index + 1
		if !bytes.Equal(r.ev.Hash(), r.hash) {
			rep.fail(RowEdited, RootLogName, r.index, "", "root log event (%s %q/%s) does not match its leaf hash: edited", r.ev.Kind, r.ev.TenantID, r.ev.Month)
			r.ev.Kind = "" // says nothing about the tenant logs
		}
		hashes = append(hashes, r.hash)
	}
	slices.SortFunc(cps, func(a, b signedCheckpoint) int { return cmp.Compare(a.size, b.size) })
	r := rangeFactory.NewEmptyRange(0)
	for _, cp := range cps {
		if cp.size > uint64(len(hashes)) {
			rep.fail(LogTruncated, RootLogName, int64(len(hashes)), "", "root checkpoint %s has size %d but the root log has %d events: events %d to %d deleted", cp.name, cp.size, len(hashes), len(hashes), cp.size-1)
			continue
		}
		st.Checkpointed = max(st.Checkpointed, cp.size)
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
			rep.fail(RootMismatch, RootLogName, -1, "", "root of the first %d root log events differs from checkpoint %s: events below %d were edited, reordered, removed or inserted", cp.size, cp.name, cp.size)
		}
	}
	if st.Leaves > st.Checkpointed {
		st.Unanchored = st.Leaves - st.Checkpointed
	}
	if head == nil {
		rep.fail(BadHead, RootLogName, -1, "", "root log head is missing")
	} else {
		root, err := rootOf(hashes)
		if err != nil {
			return err
		}
		if head.size != int64(len(hashes)) || (head.size > 0 && !bytes.Equal(root, head.hash)) {
			rep.fail(BadHead, RootLogName, -1, "", "root log head says %d events, the database holds %d with another root", head.size, len(hashes))
		}
	}
	rep.Root = st

	seals := map[[2]string]rootEventRow{}
	var removals []rootEventRow
	for _, r := range events {
		e := r.ev
		switch e.Kind {
		case EventLog:
			l := get(e.TenantID, e.Month)
			l.cps = append(l.cps, signedCheckpoint{name: fmt.Sprintf("root log event %d", r.index), size: e.Size, root: e.Root,
				rootEvent: true, anchored: uint64(r.index) < st.Checkpointed})
		case EventSeal:
			k := [2]string{e.TenantID, e.Month}
			if _, ok := seals[k]; !ok {
				seals[k] = r
			}
			get(e.TenantID, e.Month)
		case EventPartitionDrop, EventTenantDeletion, EventLogDrop:
			removals = append(removals, r)
		}
	}
	for k, l := range logs {
		seal, sealed := seals[k]
		for _, rm := range removals {
			if !rm.ev.removes(k[0], k[1]) {
				continue
			}
			end := &logEnd{removed: true, what: fmt.Sprintf("%s (root log event %d)", rm.ev.Kind, rm.index)}
			if sealed && seal.index < rm.index {
				end.size = seal.ev.Size
				end.what = fmt.Sprintf("seal (root log event %d) and %s", seal.index, end.what)
			}
			l.end = end
			break
		}
		if l.end == nil && sealed {
			l.end = &logEnd{size: seal.ev.Size, what: fmt.Sprintf("seal (root log event %d)", seal.index)}
		}
	}
	return nil
}
