package scheduler

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		now      int // ms after t0
		pauseTo  int // >0: pause until this ms instead of reserving
		limit    time.Duration
		wantWait time.Duration
		wantOK   bool
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"burst then spaced at the rate", 10, 3, []step{
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 100 * time.Millisecond, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 200 * time.Millisecond, wantOK: true},
		}},
		{"refills while idle, never beyond the burst", 10, 2, []step{
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 10000, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 10000, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 10000, limit: time.Minute, wantWait: 100 * time.Millisecond, wantOK: true},
		}},
		{"a turn beyond the limit is not taken", 1, 1, []step{
			{now: 0, limit: time.Second, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Second, wantWait: time.Second, wantOK: true},
			{now: 0, limit: time.Second, wantWait: 2 * time.Second, wantOK: false},
			// The refused turn was not consumed.
			{now: 1000, limit: time.Second, wantWait: time.Second, wantOK: true},
		}},
		{"pause delays the next turn and restarts with one token", 10, 5, []step{
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, pauseTo: 30000},
			{now: 1000, limit: time.Minute, wantWait: 29 * time.Second, wantOK: true},
			{now: 1000, limit: time.Minute, wantWait: 29*time.Second + 100*time.Millisecond, wantOK: true},
			{now: 1000, limit: 10 * time.Second, wantWait: 29*time.Second + 200*time.Millisecond, wantOK: false},
		}},
		{"unlimited waits only for a pause", 0, 0, []step{
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, limit: time.Minute, wantWait: 0, wantOK: true},
			{now: 0, pauseTo: 5000},
			{now: 1000, limit: time.Minute, wantWait: 4 * time.Second, wantOK: true},
			{now: 1000, limit: time.Second, wantWait: 4 * time.Second, wantOK: false},
			{now: 5000, limit: time.Second, wantWait: 0, wantOK: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBucket(tc.rate, tc.burst, t0)
			for i, s := range tc.steps {
				if s.pauseTo > 0 {
					b.pause(at(s.now), at(s.pauseTo))
					if !b.paused(at(s.pauseTo-1)) || b.paused(at(s.pauseTo)) {
						t.Fatalf("step %d: paused() does not end at the pause's end", i)
					}
					continue
				}
				wait, ok := b.reserve(at(s.now), s.limit)
				if wait != s.wantWait || ok != s.wantOK {
					t.Fatalf("step %d: reserve = %v, %v; want %v, %v", i, wait, ok, s.wantWait, s.wantOK)
				}
			}
		})
	}
}
