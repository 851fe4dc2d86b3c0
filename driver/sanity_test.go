package driver

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
)

// sanityFocus selects the csi-sanity specs that apply to a driver without volumes of its own: the
// Identity and GroupController suites whole, and the Controller specs that need no CreateVolume.
// (The GroupController suite of csi-test v5.6.0 never calls CreateVolume: it checks capabilities and
// the NOT_FOUND / INVALID_ARGUMENT / idempotent-delete rules with made-up ids. Of its 8 ListSnapshots
// specs, 5 take a snapshot of a volume made by CreateVolume; the other 3 are in focus. Of its 3
// GetSnapshot specs, one takes snapshots of volumes; the 2 error cases are in focus.)
var sanityFocus = map[string]string{
	"Identity":        `Identity Service `,
	"GroupController": `GroupController Service `,
	"Controller": `Controller Service \[Controller Server\] ControllerGetCapabilities |` +
		`DeleteSnapshot \[Controller Server\] should (fail when no snapshot id|succeed when an invalid snapshot id)|` +
		`CreateSnapshot \[Controller Server\] should fail when no (name|source volume id)|` +
		`ListSnapshots \[Controller Server\] should (return appropriate values|return empty when the specified (snapshot|source volume) id does not exist)|` +
		`GetSnapshot \[Controller Server\] should return an error( when the specified snapshot id does not exist)?$`,
}

// sanityCounts tallies the specs of one focus group.
type sanityCounts struct{ ran, passed, skipped, failed int }

// TestCSISanity runs csi-sanity (csi-test v5 pkg/sanity) against the driver's real Run over its unix
// socket and reports how many specs of each focused group ran, passed and were skipped; a skip inside
// the focus fails the test, since it would mean a service went unchecked.
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
	groupOf := map[string]*regexp.Regexp{}
	for group, pattern := range sanityFocus {
		suiteConfig.FocusStrings = append(suiteConfig.FocusStrings, pattern)
		groupOf[group] = regexp.MustCompile(`^(?:` + pattern + `)`)
	}
	passed := ginkgo.RunSpecs(t, "csi-sanity", suiteConfig, reporterConfig)

	counts := map[string]*sanityCounts{}
	for group := range sanityFocus {
		counts[group] = &sanityCounts{}
	}
	filtered := 0
	for _, spec := range report.SpecReports {
		if spec.LeafNodeType != types.NodeTypeIt {
			continue
		}
		group := ""
		for name, re := range groupOf {
			if re.MatchString(spec.FullText()) {
				group = name
			}
		}
		if group == "" {
			filtered++
			continue
		}
		c := counts[group]
		switch {
		case spec.State == types.SpecStatePassed:
			c.ran++
			c.passed++
		case spec.State == types.SpecStateSkipped || spec.State == types.SpecStatePending:
			c.skipped++
			t.Errorf("focused spec skipped: %s", spec.FullText())
		default:
			c.ran++
			c.failed++
			t.Errorf("spec %s: %s: %s", spec.State, spec.FullText(), spec.Failure.Message)
		}
	}
	// csi-test v5.6.0 has 3 Identity, 6 GroupController and 10 volume-free Controller specs in focus.
	want := map[string]int{"Identity": 3, "GroupController": 6, "Controller": 10}
	for _, group := range []string{"Identity", "GroupController", "Controller"} {
		c := counts[group]
		t.Logf("csi-sanity %s: ran %d, passed %d, skipped %d, failed %d", group, c.ran, c.passed, c.skipped, c.failed)
		if c.ran != want[group] || c.passed != want[group] {
			t.Errorf("csi-sanity %s: %d ran and %d passed, want %d of each", group, c.ran, c.passed, want[group])
		}
	}
	t.Logf("csi-sanity specs outside the focus (not run; they need CreateVolume or node services): %d", filtered)
	if !passed {
		t.Error("csi-sanity suite failed")
	}
}
