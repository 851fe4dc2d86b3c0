package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
)

// The fuzz targets of the parsers that take input from outside the driver: volume and snapshot ids
// (the CO), class parameters (whoever writes a snapshot class), metadata records (anyone who can edit
// a ConfigMap in the metadata namespace) and endpoints (class parameters and etcd's member list).
// Seeds live in testdata/fuzz/<target>/ in Go's corpus format; go test runs them as tests, and
// go test -fuzz=<target> ./driver/ fuzzes one target.

// fuzzEngine starts an Engine over a fake API holding the test world's PVCs and PVs, for fuzz
// targets that resolve ids the way a Create does.
func fuzzEngine(f *testing.F) *Engine {
	f.Helper()
	kube := fake.NewClientset(etcdPVCs(fxNS, fxCluster, 3)...)
	e, err := NewEngine(EngineConfig{
		Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel,
		EtcdImage: fxEtcdImage, DriverImage: fxDriverImage,
	})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	if err := e.Start(ctx); err != nil {
		f.Fatal(err)
	}
	return e
}

// FuzzVolumeID feeds arbitrary source volume ids and snapshot ids to the parsers a Create, Get and
// Delete use: a known PV handle or namespace/pvc-name resolves to exactly that PVC, anything else is
// InvalidArgument or NotFound naming the id, and the snapshot id classes never overlap.
func FuzzVolumeID(f *testing.F) {
	for _, seed := range []string{
		pvHandle(fxNS, fxCluster, 0), fxNS + "/data-main-1", "etcd-test/data-main-9", "a/b/c", "/abs", "ns/", "/",
		"Etcd-Test/data-main-0", "etcd-test/data-main-0\n", "etcdgs-" + strings.Repeat("0", 32) + "-0123abcd",
		"etcds-" + strings.Repeat("f", 32), strings.Repeat("a", 64) + "/x",
	} {
		f.Add(seed)
	}
	e := fuzzEngine(f)
	f.Fuzz(func(t *testing.T, id string) {
		pvc, err := e.resolveVolume(context.Background(), id)
		switch {
		case err != nil:
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
				t.Fatalf("resolveVolume(%q) = %v, want InvalidArgument or NotFound", id, err)
			}
			if id != "" && !strings.Contains(status.Convert(err).Message(), "volume "+strconv.Quote(id)) {
				t.Fatalf("%v: the message does not name volume %q", err, id)
			}
		case pvc.Namespace != fxNS || pvc.Labels[fxClusterLabel] != fxCluster:
			t.Fatalf("%q resolved to %s/%s outside the test world", id, pvc.Namespace, pvc.Name)
		case id != pvc.Namespace+"/"+pvc.Name && !isPVHandleOf(id, pvc):
			t.Fatalf("%q resolved to PVC %s/%s, which it does not name", id, pvc.Namespace, pvc.Name)
		}

		if ns, name, ok := splitPVCID(id); ok {
			if ns+"/"+name != id || strings.Contains(name, "/") || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
				t.Fatalf("splitPVCID(%q) = %q, %q: not the namespace and name the id spells", id, ns, name)
			}
		}

		member, record := IsMemberSnapshotID(id), isRecordID(id)
		if member && record {
			t.Fatalf("%q is both a member and a record id", id)
		}
		if group := GroupIDOfMember(id); member != (group != "") || (member && (!isRecordID(group) || !strings.HasPrefix(id, group+"-"))) {
			t.Fatalf("GroupIDOfMember(%q) = %q inconsistent with IsMemberSnapshotID = %v", id, group, member)
		}
		if record || member {
			if len(id) > maxStringBytes || len(validation.IsDNS1123Label(id)) > 0 {
				t.Fatalf("snapshot id %q is not a DNS-1123 label within the CSI limit", id)
			}
		}
		if g := snapshotID(id, true); !isRecordID(g) || IsMemberSnapshotID(g) || GroupIDOfMember(memberSnapshotID(g, id)) != g {
			t.Fatalf("ids derived from name %q do not parse back: %q", id, g)
		}
	})
}

// isPVHandleOf reports whether id is the CSI volume handle of the PV bound to pvc.
func isPVHandleOf(id string, pvc *corev1.PersistentVolumeClaim) bool {
	for i := range 3 {
		if id == pvHandle(fxNS, fxCluster, i) && pvc.Name == fmt.Sprintf("data-%s-%d", fxCluster, i) {
			return true
		}
	}
	return false
}

// FuzzParams feeds arbitrary class parameters, and the database size etcd reports, to what shapes the
// snapshot's objects: parseParams refuses with InvalidArgument or yields parameters whose endpoints
// survive normalisation, and the PVC and Job sized from them can hold the database and can run.
func FuzzParams(f *testing.F) {
	f.Add(paramSnapshotMinSize, "1Gi", paramEndpoints, "https://etcd-0:2379, etcd-1:2379", int64(1<<30))
	f.Add(paramAllowPlaintext, "true", paramEndpoints, "http://etcd-0:2379", int64(0))
	f.Add(paramSnapshotMinSize, "1e100", paramSnapshotStorageClass, "fast", int64(20480))
	f.Add(paramSnapshotMinSize, "-1", "endpoint", "x", int64(-1))
	f.Add("csi.storage.k8s.io/volumesnapshot/name", "n", paramEndpoints, ",,", int64(math.MaxInt64))
	f.Add(paramSnapshotMinSize, "9223372036854775807", paramAllowPlaintext, "True", int64(math.MaxInt64/2))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, dbSize int64) {
		in := map[string]string{k1: v1, k2: v2}
		p, err := parseParams(in)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("parseParams(%q) = %v, want InvalidArgument", in, err)
			}
			return
		}
		if p.MinSize.Sign() <= 0 {
			t.Fatalf("parseParams(%q): min size %s is not positive", in, p.MinSize.String())
		}
		for _, ep := range p.Endpoints {
			if ep == "" || ep != strings.TrimSpace(ep) || strings.Contains(ep, ",") {
				t.Fatalf("parseParams(%q): endpoint %q is empty, untrimmed or a list", in, ep)
			}
		}
		if paramsHash(in) != paramsHash(map[string]string{k2: v2, k1: v1}) {
			t.Fatal("paramsHash depends on map order")
		}
		// With v1 empty the shifted map is the same map (seed 1922957a9c6228d1), so only a real shift counts.
		if k1 != k2 && v1 != "" && !strings.HasPrefix(k1, upstreamParameterPrefix) && paramsHash(in) == paramsHash(map[string]string{k1 + v1: "", k2: v2}) {
			t.Fatalf("paramsHash(%q) collides with a shifted key", in)
		}
		if len(p.Endpoints) > 0 {
			if eps, err := normalizeEndpoints(p.Endpoints, p.AllowPlaintext); err == nil {
				checkAcceptedEndpoints(t, eps, p.AllowPlaintext)
			} else if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("normalizeEndpoints(%q) = %v, want InvalidArgument", p.Endpoints, err)
			}
		}

		size := snapshotPVCSize(dbSize, p)
		if size.Cmp(p.MinSize) < 0 {
			t.Fatalf("snapshot PVC %s is below the class minimum %s", size.String(), p.MinSize.String())
		}
		// Sizes above maxSizedDB are refused by the health check (memberStatus); the sizing saturates.
		if held := min(dbSize, maxSizedDB); held > 0 && size.Cmp(*resource.NewQuantity(held, resource.BinarySI)) < 0 {
			t.Fatalf("snapshot PVC %s cannot hold a %d-byte database", size.String(), held)
		}
		if d := jobDeadline(dbSize); d < jobDeadlineBase {
			t.Fatalf("jobDeadline(%d) = %d, below the base %d", dbSize, d, jobDeadlineBase)
		}
	})
}

// checkAcceptedEndpoints holds every endpoint the driver accepted to what a client can dial: an
// http(s) URL with a host, plaintext only when allowed, and accepted by the health check too.
func checkAcceptedEndpoints(t *testing.T, eps []string, allowPlaintext bool) {
	t.Helper()
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && allowPlaintext)) {
			t.Fatalf("accepted endpoint %q is not a usable client URL (allowPlaintext %v)", ep, allowPlaintext)
		}
		if u.User != nil {
			t.Fatalf("accepted endpoint %q carries user info, which would end up in Job arguments and logs", ep)
		}
	}
}

// FuzzEndpoints feeds arbitrary endpoint lists to both endpoint checks (the class parameter's and the
// health check's): each refuses with InvalidArgument or accepts only dialable URLs, and what the class
// parameter check accepts the health check accepts too, so a class is refused in one place only.
func FuzzEndpoints(f *testing.F) {
	for _, seed := range []string{
		"https://127.0.0.1:2379", "etcd-0.etcd:2379,etcd-1.etcd:2379", "http://etcd:2379", "https://[::1]:2379",
		"https://etcd:2379/v3", "unix:///run/etcd.sock", "https://user:pass@etcd:2379", "https://etcd:2379?x=1",
		"https://:2379", "https://etcd:port", "//etcd:2379", "https://etcd:2379#frag", "HTTPS://etcd:2379",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, list string, allowPlaintext bool) {
		eps := strings.Split(list, ",")
		checked := checkEndpoints(eps, allowPlaintext)
		if checked != nil && status.Code(checked) != codes.InvalidArgument {
			t.Fatalf("checkEndpoints(%q) = %v, want InvalidArgument", eps, checked)
		}
		if checked == nil {
			checkAcceptedEndpoints(t, eps, allowPlaintext)
		}
		normalized, err := normalizeEndpoints(eps, allowPlaintext)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("normalizeEndpoints(%q) = %v, want InvalidArgument", eps, err)
			}
			return
		}
		checkAcceptedEndpoints(t, normalized, allowPlaintext)
		if err := checkEndpoints(normalized, allowPlaintext); err != nil {
			t.Fatalf("class parameter endpoints %q pass their own check but the health check refuses them: %v", normalized, err)
		}
	})
}

// FuzzDecodeRecord feeds arbitrary metadata JSON to decodeRecord: a refusal is Internal; a decoded
// record encodes and decodes to itself, answers CSI without panicking, and a Failed one never reads
// as success.
func FuzzDecodeRecord(f *testing.F) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	good := &Record{
		ID: snapshotID("seed", true), Name: "seed", Namespace: fxNS, Cluster: fxCluster, Group: true, Phase: PhaseReady,
		Sources:   []SourceRecord{{VolumeID: fxNS + "/data-main-0", PVC: "data-main-0", SnapshotID: memberSnapshotID(snapshotID("seed", true), fxNS+"/data-main-0")}},
		Members:   []MemberRecord{{ID: "8e9e05c52164694d", Name: "m0", PeerURLs: []string{"https://127.0.0.1:2380"}, ClientURLs: []string{"https://127.0.0.1:2379"}}},
		CreatedAt: now, ReadyAt: &now, SizeBytes: 28704, Revision: 7, Keys: 4, TotalKeys: 6, Hash: 2902389647,
	}
	cm, err := encodeRecord(fxMetaNS, good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cm.Data[recordKey])
	f.Add(`{"phase":"Failed","errorCode":"OK","error":"x"}`)
	f.Add(`{"createdAt":"0000-01-01T00:00:00Z","sizeBytes":-1}`)
	f.Add(`{"sources":[null],"members":[{"peerURLs":null}]}`)
	f.Add(`{"readyAt":null,"sourceMember":{}}`)
	f.Fuzz(func(t *testing.T, raw string) {
		rec, err := decodeRecord(&corev1.ConfigMap{Data: map[string]string{recordKey: raw}})
		if err != nil {
			if status.Code(err) != codes.Internal {
				t.Fatalf("decodeRecord = %v, want Internal", err)
			}
			return
		}
		if rec.Phase == PhaseFailed && status.Code(rec.Err()) == codes.OK {
			t.Fatalf("Failed record %q reads as success", raw)
		}
		if rec.Phase != PhaseFailed && rec.Err() != nil {
			t.Fatalf("record in phase %q has an error", rec.Phase)
		}
		groupSnapshotOf(rec)
		singleSnapshotOf(rec)
		sourceVolumeIDs(rec)
		cm, err := encodeRecord(fxMetaNS, rec)
		if err != nil {
			// Only a time encoding/json cannot write back (a year outside 0..9999) may fail here.
			if !strings.Contains(err.Error(), "year outside of range") {
				t.Fatalf("a decoded record does not encode: %v", err)
			}
			return
		}
		again, err := decodeRecord(cm)
		if err != nil {
			t.Fatalf("an encoded record does not decode: %v", err)
		}
		a, _ := json.Marshal(rec)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("round trip changed the record:\n%s\n%s", a, b)
		}
	})
}
