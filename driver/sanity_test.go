package driver

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
)

// sanityUnadvertised are the skip reasons csi-test v5.6.0 gives for capabilities the driver does not
// advertise (pkg/sanity/controller.go); a skip for any other reason means a service went unchecked.
var sanityUnadvertised = []string{
	"GetCapacity not supported",
	"ListVolumes not supported",
	"CreateVolume not supported",
	"DeleteVolume not supported",
	"ControllerPublishVolume not supported",
	"ControllerUnpublishVolume not supported",
	"Controller Publish, UnpublishVolume not supported",
	"ControllerExpandVolume not supported",
	"ControllerModifyVolume not supported",
	"ControllerGetVolumeHealth not supported",
	"ControllerListVolumeHealth not supported",
	"SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
}

// Verdicts of one csi-sanity spec.
const (
	sanityPassed       = "passed"
	sanityUnsupported  = "skipped: capability not advertised"
	sanityPending      = "pending upstream (XIt)"
	sanityNeedsVolume  = "failed: needs CreateVolume"
	sanityNeedsNode    = "failed: needs a Node service"
	sanityUnaccounted  = "unaccounted"
	sanityCreateVolume = "method CreateVolume not implemented"
	sanityNoNode       = "unknown service csi.v1.Node"
)

// sanityVerdict classifies one spec. Two kinds of failure are this driver's nature, not defects: the
// driver snapshots volumes of other CSI drivers, so it offers no CreateVolume (the specs that first
// make a volume to snapshot or validate fail there, at csi-test's MustCreateVolume, before they reach
// the RPC under test), and it is a controller-only plugin with no Node service (it never mounts a
// volume). Everything else must pass, or be skipped for a capability it does not advertise.
func sanityVerdict(spec types.SpecReport) string {
	msg := spec.Failure.Message
	switch {
	case spec.State == types.SpecStatePassed:
		return sanityPassed
	case spec.State == types.SpecStateSkipped && slices.Contains(sanityUnadvertised, msg):
		return sanityUnsupported
	case spec.State == types.SpecStatePending:
		return sanityPending
	case spec.State == types.SpecStateFailed && strings.Contains(msg, sanityCreateVolume):
		return sanityNeedsVolume
	case spec.State == types.SpecStateFailed && strings.HasPrefix(spec.FullText(), "Node Service ") && strings.Contains(msg, sanityNoNode):
		return sanityNeedsNode
	}
	return sanityUnaccounted
}

// suiteOutcome receives ginkgo's verdict on the whole suite, which the expected failures make false;
// TestCSISanity judges spec by spec instead.
type suiteOutcome struct{ failed bool }

func (s *suiteOutcome) Fail() { s.failed = true }

// TestCSISanity runs the whole csi-sanity suite (csi-test v5 pkg/sanity, no focus) against the
// driver's real Run over its unix socket and accounts for every spec with sanityVerdict; an
// unaccounted spec fails the test. The counts are csi-test v5.6.0's: a change means the suite or the
// driver's capabilities changed, and the expectation must be re-read, not copied.
func TestCSISanity(t *testing.T) {
	e := startCSI(t, nil)
	dir := shortTempDir(t)
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + e.socket
	// csi-sanity creates and removes these for every spec; they must not exist beforehand.
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")

	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()
	gomega.RegisterFailHandler(ginkgo.Fail)
	var report types.Report
	ginkgo.ReportAfterSuite("counts", func(r types.Report) { report = r })
	suiteConfig, reporterConfig := ginkgo.GinkgoConfiguration()
	var outcome suiteOutcome
	ginkgo.RunSpecs(&outcome, "csi-sanity", suiteConfig, reporterConfig)

	counts := map[string]int{}
	byService := map[string]map[string]int{}
	for _, spec := range report.SpecReports {
		if spec.LeafNodeType != types.NodeTypeIt {
			continue
		}
		v := sanityVerdict(spec)
		counts[v]++
		service := strings.SplitN(spec.FullText(), " ", 2)[0]
		if byService[service] == nil {
			byService[service] = map[string]int{}
		}
		byService[service][v]++
		if v == sanityUnaccounted {
			t.Errorf("csi-sanity spec %s: %s", spec.State, spec.FullText())
			t.Logf("    %s", spec.Failure.Message)
		}
	}
	services := make([]string, 0, len(byService))
	for s := range byService {
		services = append(services, s)
	}
	slices.Sort(services)
	for _, s := range services {
		t.Logf("csi-sanity %-28s %v", s, byService[s])
	}
	want := map[string]int{
		sanityPassed:      21,
		sanityUnsupported: 43,
		sanityPending:     1,
		sanityNeedsVolume: 11,
		sanityNeedsNode:   27,
	}
	for _, v := range []string{sanityPassed, sanityUnsupported, sanityPending, sanityNeedsVolume, sanityNeedsNode} {
		if counts[v] != want[v] {
			t.Errorf("csi-sanity: %d specs %s, want %d", counts[v], v, want[v])
		}
	}
	t.Logf("csi-sanity v5.6.0, whole suite: %s", fmt.Sprint(counts))
	// The groups the driver serves are checked whole: no spec of Identity or GroupController may fail.
	for _, s := range []string{"Identity", "GroupController"} {
		if c := byService[s]; c[sanityPassed] == 0 || len(c) != 1 {
			t.Errorf("csi-sanity %s: %v, want every spec passed", s, c)
		}
	}
}
