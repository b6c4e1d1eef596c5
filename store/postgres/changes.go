package postgres

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/internal/wait"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// changesChannel is the NOTIFY channel of migration 0002's trigger.
const changesChannel = "tokenbroker_connections"

var _ store.ChangeFeed = (*Store)(nil)

// FollowChanges delivers the id of every connection written by any replica
// to h, from PostgreSQL's LISTEN/NOTIFY: a trigger announces every write
// that moves a row's version, in the writing transaction, so the notice
// arrives only once the write is visible. It holds one dedicated connection
// (outside the pool) and reconnects with backoff when it drops, calling
// h.ChangesLost first and h.ChangesFollowed once listening again. It
// returns when ctx is done.
func (s *Store) FollowChanges(ctx context.Context, h store.ChangeHandler) {
	s.follow(ctx, changesChannel, "change feed", h.ChangesFollowed, h.ConnectionChanged, h.ChangesLost)
}

// follow LISTENs on channel over one dedicated connection (outside the
// pool), calling followed once listening, notice with each payload, and
// lost whenever the connection drops (notices sent meanwhile are gone); it
// reconnects with the one backoff (oauth.Backoff: up to 100 ms, the bound
// doubling to 5 s) until ctx is done. what names the feed in logs.
func (s *Store) follow(ctx context.Context, channel, what string, followed func(), notice func(string), lost func()) {
	backoff := oauth.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := s.listen(ctx, channel, followed, notice)
		lost()
		if ctx.Err() != nil {
			return
		}
		delay := backoff.Delay(attempt, rand.Float64())
		s.log.WarnContext(ctx, "store/postgres: "+what+" interrupted; reconnecting", "error", s.fail(ctx, "listen", err), "retry_in", delay)
		if wait.Sleep(ctx, delay) != nil {
			return
		}
	}
}

func (s *Store) listen(ctx context.Context, channel string, followed func(), notice func(string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	if followed != nil {
		followed()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		notice(n.Payload)
	}
}

// keysChannel is the NOTIFY channel of migration 0008's api_keys trigger.
const keysChannel = "tokenbroker_api_keys"

var _ store.KeyFeed = (*Store)(nil)

// FollowKeyChanges delivers the id of every API key updated (revoked) by
// any replica, over its own LISTEN connection, reconnecting with backoff.
// lost is called whenever the connection drops and again each time the
// LISTEN is in place: a key cached before that moment may have been
// revoked while nobody was listening, and nothing would ever announce it.
// It returns when ctx is done.
func (s *Store) FollowKeyChanges(ctx context.Context, changed func(keyID string), lost func()) {
	s.follow(ctx, keysChannel, "api key feed", lost, changed, lost)
}
