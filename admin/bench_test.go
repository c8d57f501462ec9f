//go:build unix

package admin

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/loom-gateway/loom/migrations"
)

// BenchmarkLogin compares a failed sign-in of a known username with one of an unknown
// username, at the default argon2id cost over SQLite: they should cost the same within
// noise (each verifies one hash and records one failure). Besides wall time it reports
// the process's CPU time per sign-in (cpu-ns/op), which a loaded machine disturbs far less.
//
//	go test -run '^$' -bench Login -benchtime 30x -count 8 ./admin/
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	u, err := NewUsers(UsersOptions{Store: newStore(b, migrations.SQLite), MaxFailures: 1 << 30, MaxAddrFailures: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := u.CreateUser(ctx, "known", "the real password"); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"known", "unknown"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				if _, _, err := u.Login(ctx, name, "a wrong password", "bench"); !errors.Is(err, ErrBadCredentials) {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
