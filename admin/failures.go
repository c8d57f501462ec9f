package admin

import "time"

// nextFailures is the failure count after one more failure at the given time, from the
// stored count, the time of the last failure and the lock: the count restarts when the last
// failure is older than window, and reaching max locks the name until at+lockFor and
// restarts the count. Both stores share it so they count alike.
func nextFailures(prev int, last time.Time, locked *time.Time, at time.Time, window time.Duration, max int, lockFor time.Duration) Failures {
	count := prev + 1
	if at.Sub(last) > window {
		count = 1
	}
	var f Failures
	if locked != nil {
		f.LockedUntil = locked.UTC()
	}
	if count >= max {
		return Failures{Count: 0, LockedUntil: at.Add(lockFor).UTC()}
	}
	f.Count = count
	return f
}

// nullTime is t, or nil when zero, for a nullable column.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := stamp(t)
	return &u
}
