//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package provider

import (
	"net"
	"syscall"
)

// socketQuiet reports whether nothing is waiting to be read on an idle connection: no
// bytes and no end of stream. It peeks with a non-blocking recv, one system call, and
// never consumes anything.
func socketQuiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EINTR {
				continue
			}
			// Nothing to read is EAGAIN; a byte or an end of stream (0 bytes, no error)
			// or a reset means the connection is not quiet.
			quiet = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
			return true
		}
	})
	return err == nil && quiet
}
