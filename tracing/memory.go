package tracing

import (
	"context"
	"sync"
)

var _ Sink = (*MemorySink)(nil)

// MemorySink keeps traces in memory, once per ID. It is meant for tests and for embedding
// where traces are read back by the same process.
type MemorySink struct {
	mu     sync.Mutex
	traces []*Trace
	seen   map[string]bool
}

// NewMemorySink returns an empty MemorySink.
func NewMemorySink() *MemorySink { return &MemorySink{seen: map[string]bool{}} }

// WriteBatch stores copies of the traces it has not seen yet.
func (m *MemorySink) WriteBatch(ctx context.Context, batch []*Trace) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range batch {
		if m.seen[t.ID] {
			continue
		}
		m.seen[t.ID] = true
		c := *t
		m.traces = append(m.traces, &c)
	}
	return nil
}

// Shutdown does nothing.
func (m *MemorySink) Shutdown(context.Context) error { return nil }

// Traces returns the stored traces in arrival order.
func (m *MemorySink) Traces() []*Trace {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Trace(nil), m.traces...)
}
