package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/store"
)

// BenchmarkRecord records entries from parallel callers while the writer
// stores every one in SQLite on the same cores: ns/op is the sustained
// cost of the whole trail per entry (the caller's part is a queue send,
// no database round trip), and "dropped" must stay 0.
func BenchmarkRecord(b *testing.B) {
	e := store.AuditEntry{Actor: "billing-service", ActorID: "abcdef123456", Action: "token.read", ConnectionID: "c1", Outcome: "ok"}
	b.Run("with-writer", func(b *testing.B) {
		r, err := audit.New(audit.Options{Store: open(b, nil), FlushInterval: 500 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record(e)
			}
		})
		_ = r.Flush(context.Background())
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(float64(r.Dropped()), "dropped")
	})
}
