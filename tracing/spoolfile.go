package tracing

// The spool writer's files, behind a seam so tests can fill the disk: a segment is created
// with createSegment through PipelineConfig.createFile (os.OpenFile by default), and its
// space is reserved ahead with fallocate where the file system allows (spoolfile_linux.go),
// so that a full disk shows up when a segment is started — as "spool full", at a known
// size — and not as a torn append in the middle of one.

import (
	"errors"
	"os"
	"syscall"
)

// spoolFile is a segment open for appending.
type spoolFile interface {
	Write(b []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
	// Reserve allocates n bytes of disk for the file without changing its size. It returns
	// errNoReserve where the file system cannot.
	Reserve(n int64) error
}

var errNoReserve = errors.New("tracing: spool: space reservation not supported")

// osSpoolFile is a spoolFile on the real file system.
type osSpoolFile struct{ *os.File }

func (f osSpoolFile) Reserve(n int64) error { return reserve(f.File, n) }

// createSpoolFile creates a new segment file, failing if it exists.
func createSpoolFile(path string) (spoolFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return osSpoolFile{f}, nil
}

// isNoSpace reports whether err says the disk (or the user's quota) is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
