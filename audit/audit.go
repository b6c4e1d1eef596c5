package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/wait"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// Store is where entries are kept. Every [store.Store] satisfies it.
type Store interface {
	AppendAudit(ctx context.Context, entries []store.AuditEntry) error
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
}

// Options configures a [Recorder]. Store is required.
type Options struct {
	Store Store
	// Stream, if set, receives every entry as one JSON object per line
	// after it is stored: stdout or a file, for a SIEM. Writes are
	// serialised by the recorder.
	Stream io.Writer
	// FlushInterval is the longest an entry waits in the queue. Default 500ms.
	FlushInterval time.Duration
	// BatchSize is the most entries written per transaction. Default 500.
	BatchSize int
	// QueueSize bounds the entries waiting to be written. When it is full
	// Record drops the entry and counts it; the count is written to the
	// trail as an audit.dropped entry. Default 65536.
	QueueSize int
	// Retention is how long entries are kept; 0 keeps them forever.
	Retention time.Duration
	// Logger receives write failures; never entry contents. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// RetryDelay bounds the first wait after a failed write; the bound
	// doubles, up to 30 s, while the database stays unavailable (the one
	// backoff, oauth.Backoff, with its jitter). Default 1 s.
	RetryDelay time.Duration
}

const (
	defaultFlushInterval = 500 * time.Millisecond
	defaultBatchSize     = 500
	defaultQueueSize     = 1 << 16
	writeTimeout         = 10 * time.Second
	pruneEvery           = time.Hour
	// defaultRetryDelay and maxRetryDelay space attempts to write a batch.
	defaultRetryDelay = time.Second
	maxRetryDelay     = 30 * time.Second
	// maxAttempts bounds the attempts per batch the store refuses while it
	// is reachable, so a batch it keeps refusing (a bad entry) does not
	// hold up every later one. A batch that failed because the database
	// was unavailable is tried until it is back.
	maxAttempts = 5
)

// ActionDropped is the action of the entry that counts entries lost: those
// the queue had no room for, and batches the store kept refusing while it
// was reachable.
const ActionDropped = "audit.dropped"

// Recorder queues audit entries and writes them in batches. Create it with
// [New], start [Recorder.Run]; it is safe for concurrent use.
type Recorder struct {
	opts    Options
	queue   chan store.AuditEntry
	dropped atomic.Int64
	written atomic.Int64
	// flushReq asks the loop to write what is queued now.
	flushReq chan chan struct{}
	streamMu sync.Mutex
}

// New checks opts and returns a Recorder.
func New(opts Options) (*Recorder, error) {
	if opts.Store == nil {
		return nil, errors.New("audit: Options.Store is required")
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = defaultFlushInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = defaultBatchSize
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = defaultQueueSize
	}
	if opts.Retention < 0 {
		return nil, errors.New("audit: Options.Retention is negative")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = defaultRetryDelay
	}
	return &Recorder{
		opts:     opts,
		queue:    make(chan store.AuditEntry, opts.QueueSize),
		flushReq: make(chan chan struct{}),
	}, nil
}

// Record queues e without blocking. A zero Time is set to now.
func (r *Recorder) Record(e store.AuditEntry) {
	if e.Time.IsZero() {
		e.Time = r.opts.Now()
	}
	select {
	case r.queue <- e:
	default:
		r.dropped.Add(1)
	}
}

// Dropped returns how many entries found the queue full so far.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Written returns how many entries have been stored so far.
func (r *Recorder) Written() int64 { return r.written.Load() }

// Flush waits until every entry queued before the call has been written
// (or given up on), or ctx ends. Run must be running.
func (r *Recorder) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case r.flushReq <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes queued entries until ctx ends, then writes what is still
// queued (bounded by a timeout) and returns.
func (r *Recorder) Run(ctx context.Context) {
	tick := time.NewTicker(r.opts.FlushInterval)
	defer tick.Stop()
	var lastPrune time.Time
	batch := make([]store.AuditEntry, 0, r.opts.BatchSize)
	for {
		select {
		case e := <-r.queue:
			batch = append(batch, e)
			if len(batch) >= r.opts.BatchSize {
				batch = r.write(ctx, batch)
			}
		case <-tick.C:
			batch = r.drain(ctx, batch)
			if r.opts.Retention > 0 && r.opts.Now().Sub(lastPrune) >= pruneEvery {
				lastPrune = r.opts.Now()
				r.prune(ctx)
			}
		case done := <-r.flushReq:
			batch = r.drain(ctx, batch)
			close(done)
		case <-ctx.Done():
			// Shutting down: write what is left on a fresh context.
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
			r.drain(final, batch)
			cancel()
			return
		}
	}
}

// drain writes batch and everything queued now.
func (r *Recorder) drain(ctx context.Context, batch []store.AuditEntry) []store.AuditEntry {
	for {
		select {
		case e := <-r.queue:
			batch = append(batch, e)
			if len(batch) >= r.opts.BatchSize {
				batch = r.write(ctx, batch)
			}
			continue
		default:
		}
		break
	}
	if n := r.dropped.Swap(0); n > 0 {
		batch = append(batch, store.AuditEntry{Time: r.opts.Now(), Actor: "system", Action: ActionDropped,
			Outcome: "dropped", Detail: "entries lost (queue full, or refused by the store): " + strconv.FormatInt(n, 10)})
	}
	return r.write(ctx, batch)
}

// write stores batch, retrying a few times, and returns it emptied. A
// write cut short by ctx ending (the server stopping) returns the batch
// as it was, for Run's last drain to write on a fresh context.
func (r *Recorder) write(ctx context.Context, batch []store.AuditEntry) []store.AuditEntry {
	if len(batch) == 0 {
		return batch
	}
	backoff := oauth.Backoff{Base: r.opts.RetryDelay, Max: maxRetryDelay}
	refused := 0 // failures while the database answered
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := r.opts.Store.AppendAudit(wctx, batch)
		cancel()
		if err == nil {
			r.written.Add(int64(len(batch)))
			r.stream(batch)
			break
		}
		if ctx.Err() != nil {
			return batch
		}
		r.opts.Logger.Error("audit: cannot write entries", "entries", len(batch), "attempt", attempt, "error", err)
		// While the database is down the batch is held until it is back:
		// the queue behind it fills meanwhile, and what Record cannot
		// queue is counted and written to the trail as lost.
		if !errors.Is(err, store.ErrUnavailable) {
			if refused++; refused >= maxAttempts {
				r.dropped.Add(int64(len(batch)))
				r.opts.Logger.Error("audit: entries lost", "entries", len(batch))
				break
			}
		}
		if wait.Sleep(ctx, backoff.Delay(attempt-1, rand.Float64())) != nil {
			return batch
		}
	}
	clear(batch)
	return batch[:0]
}

// streamEntry is an entry as a JSON line.
type streamEntry struct {
	Time         time.Time `json:"time"`
	Actor        string    `json:"actor"`
	ActorID      string    `json:"actor_id,omitempty"`
	Action       string    `json:"action"`
	ConnectionID string    `json:"connection_id,omitempty"`
	Outcome      string    `json:"outcome"`
	Detail       string    `json:"detail,omitempty"`
}

func (r *Recorder) stream(batch []store.AuditEntry) {
	if r.opts.Stream == nil {
		return
	}
	r.streamMu.Lock()
	defer r.streamMu.Unlock()
	enc := json.NewEncoder(r.opts.Stream)
	for _, e := range batch {
		if err := enc.Encode(streamEntry{Time: e.Time.UTC(), Actor: e.Actor, ActorID: e.ActorID, Action: e.Action,
			ConnectionID: e.ConnectionID, Outcome: e.Outcome, Detail: e.Detail}); err != nil {
			r.opts.Logger.Warn("audit: cannot write to the stream", "error", err)
			return
		}
	}
}

func (r *Recorder) prune(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	n, err := r.opts.Store.PruneAudit(pctx, r.opts.Now().Add(-r.opts.Retention))
	if err != nil {
		r.opts.Logger.Warn("audit: cannot prune old entries", "error", err)
		return
	}
	if n > 0 {
		r.opts.Logger.Info("audit: pruned old entries", "entries", n)
	}
}
