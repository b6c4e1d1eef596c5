package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// families gathers g and indexes the result by family name. Gather also
// checks the registry's consistency (duplicate series, label mismatches).
func families(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labels is a series' label set, written as name, value pairs.
type labels []string

func (ls labels) match(m *dto.Metric) bool {
	if len(m.GetLabel()) != len(ls)/2 {
		return false
	}
	for i := 0; i+1 < len(ls); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == ls[i] && lp.GetValue() == ls[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// series returns the series of family name with exactly the labels ls.
func series(fams map[string]*dto.MetricFamily, name string, ls labels) (*dto.Metric, bool) {
	for _, m := range fams[name].GetMetric() {
		if ls.match(m) {
			return m, true
		}
	}
	return nil, false
}

// value returns a counter's or gauge's value, failing the test when the
// series is missing.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, ls labels) float64 {
	t.Helper()
	m, ok := series(fams, name, ls)
	if !ok {
		t.Fatalf("%s%v: no such series", name, ls)
	}
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, ls)
	return 0
}

// histogramCount returns the number of observations of a histogram series,
// 0 when the series does not exist.
func histogramCount(fams map[string]*dto.MetricFamily, name string, ls labels) uint64 {
	m, ok := series(fams, name, ls)
	if !ok {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

// seriesCount counts the series of a family.
func seriesCount(fams map[string]*dto.MetricFamily, name string) int {
	return len(fams[name].GetMetric())
}

type dtoFamily = dto.MetricFamily
