package tracing

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reserve allocates n bytes for f with fallocate, keeping its size (FALLOC_FL_KEEP_SIZE),
// so appends into the reserved space cannot fail for lack of room.
func reserve(f *os.File, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errNoReserve
	}
	return err
}
