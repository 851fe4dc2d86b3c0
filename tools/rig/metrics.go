package rig

import (
	"context"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ScrapeMetrics reads the Prometheus text exposition at url (a component's /metrics, such as
// "http://"+r.DriverHTTPAddress+"/metrics") with the Prometheus text parser, so that the exposition
// is read as Prometheus itself would read it.
func ScrapeMetrics(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, body)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads the Prometheus text exposition in into its metric families, by name.
func ParseMetrics(in io.Reader) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(in)
	if err != nil {
		return nil, fmt.Errorf("parsing /metrics: %w", err)
	}
	return families, nil
}

// MetricValue is the sum of the values of the series of the counter, gauge or untyped family name
// whose labels include want (nil: every series); found is false when no series matches.
func MetricValue(families map[string]*dto.MetricFamily, name string, want map[string]string) (value float64, found bool) {
	for _, m := range families[name].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if !LabelsInclude(labels, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			value += m.GetCounter().GetValue()
		case m.Gauge != nil:
			value += m.GetGauge().GetValue()
		case m.Untyped != nil:
			value += m.GetUntyped().GetValue()
		default:
			continue
		}
		found = true
	}
	return value, found
}

// LabelsInclude reports whether labels holds every pair of want (a missing label reads as "").
func LabelsInclude(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}
