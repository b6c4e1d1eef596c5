package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counterCache remembers the counter of each label set a hot path has
// used, so that a request costs one map read instead of WithLabelValues'
// label hashing and validation (and, for results, a regular expression).
// The keys come from fixed vocabularies (route patterns, statuses, error
// codes); maxCached bounds it anyway, past which lookups go to the vector.
type counterCache[K comparable] struct {
	m sync.Map // K → prometheus.Counter
	n atomic.Int32
}

const maxCached = 4096

func (c *counterCache[K]) get(k K, slow func() prometheus.Counter) prometheus.Counter {
	if v, ok := c.m.Load(k); ok {
		return v.(prometheus.Counter)
	}
	ctr := slow()
	if c.n.Load() < maxCached {
		if _, loaded := c.m.LoadOrStore(k, ctr); !loaded {
			c.n.Add(1)
		}
	}
	return ctr
}

type routeStatus struct {
	route string
	code  int
}
