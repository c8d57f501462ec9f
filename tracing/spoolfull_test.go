package tracing

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// quotaFS is the spool writer's file seam over a directory holding at most quota bytes: the
// files in it (each counted at its size, or its reservation if larger) may not grow past
// it. An append that does not fit writes what fits and fails with ENOSPC, as a full disk
// does.
type quotaFS struct {
	dir   string
	quota int64

	mu       sync.Mutex
	reserved map[string]int64
	full     int // appends or reservations refused
}

func newQuotaFS(dir string, quota int64) *quotaFS {
	return &quotaFS{dir: dir, quota: quota, reserved: map[string]int64{}}
}

func (q *quotaFS) create(path string) (spoolFile, error) {
	f, err := createSpoolFile(path)
	if err != nil {
		return nil, err
	}
	return &quotaFile{osSpoolFile: f.(osSpoolFile), q: q, path: path}, nil
}

// usedLocked sums the directory's files. It runs inside the writer's calls, where a test
// cannot fail cleanly, so an unreadable directory panics.
func (q *quotaFS) usedLocked() int64 {
	ents, err := os.ReadDir(q.dir)
	if err != nil {
		panic(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		n += max(fi.Size(), q.reserved[filepath.Join(q.dir, e.Name())])
	}
	return n
}

type quotaFile struct {
	osSpoolFile
	q    *quotaFS
	path string
}

func (f *quotaFile) size() int64 {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (f *quotaFile) Write(b []byte) (int, error) {
	q := f.q
	q.mu.Lock()
	defer q.mu.Unlock()
	size := f.size()
	alloc := max(size, q.reserved[f.path])
	grow := max(size+int64(len(b))-alloc, 0)
	free := q.quota - q.usedLocked()
	if grow <= free {
		return f.osSpoolFile.Write(b)
	}
	q.full++
	fits := max(alloc-size+free, 0)
	n, _ := f.osSpoolFile.Write(b[:fits])
	return n, fmt.Errorf("write %s: %w", f.path, syscall.ENOSPC)
}

func (f *quotaFile) Reserve(n int64) error {
	q := f.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if n-max(f.size(), q.reserved[f.path]) > q.quota-q.usedLocked() {
		q.full++
		return fmt.Errorf("fallocate %s: %w", f.path, syscall.ENOSPC)
	}
	q.reserved[f.path] = n
	return nil
}

// TestPipelineDiskFull: with the sink down, the spool's disk fills and further traces are
// counted lost as spool_full (never as torn writes); once the sink is back and has every
// spooled trace, the spool frees its segments, the current one included, and appends again
// by itself: no trace recorded after that is lost.
func TestPipelineDiskFull(t *testing.T) {
	dir := t.TempDir()
	fs := newQuotaFS(dir, 48<<10)
	sink := newFlakySink(true)
	p := newTestPipeline(t, PipelineConfig{Sinks: []Sink{sink}, SpoolDir: dir, Sealer: pipeSealer{},
		segmentBytes: 8 << 10, createFile: fs.create})

	const n = 400 // about 100 KiB of records: twice the disk
	recordAll(t, p, 0, n)
	waitFor(t, "every trace spooled or lost", func() bool {
		st := p.Stats()
		return st.Spooled+st.LostSpoolFull == n
	})
	st := p.Stats()
	if st.LostSpoolFull == 0 || st.Spooled == 0 || st.LostWrite != 0 || st.Lost != st.LostSpoolFull {
		t.Fatalf("disk full: Stats %+v; want some spooled, the rest lost as spool_full only", st)
	}
	fs.mu.Lock()
	refused := fs.full
	fs.mu.Unlock()
	if refused == 0 {
		t.Fatal("the disk never filled; the test checks nothing")
	}

	// The store is back: everything spooled is written, and the disk is freed.
	sink.fail.Store(false)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the acknowledged segments, the current one included, to be reclaimed", func() bool {
		firsts, err := listSegments(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range firsts {
			if fi, err := os.Stat(segPath(dir, f)); err == nil && fi.Size() > segHeaderLen {
				return false
			}
		}
		return true
	})
	lostBefore := p.Stats().Lost
	const more = 200
	recordAll(t, p, n, n+more)
	if err := p.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	if st.Lost != lostBefore {
		t.Errorf("after space returned: %d more traces lost, want none (Stats %+v)", st.Lost-lostBefore, st)
	}
	if got, want := int64(len(sink.Traces())), st.Recorded-st.Lost; got != want {
		t.Errorf("sink holds %d traces, want every one not counted lost: %d", got, want)
	}
	for i := n; i < n+more; i++ {
		if sink.timesOffered(pipeTrace(i).ID) == 0 {
			t.Fatalf("trace %d, recorded after space returned, never reached the sink", i)
		}
	}
}
