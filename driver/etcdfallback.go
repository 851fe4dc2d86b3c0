package driver

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The client Service is the first contact with a cluster, and when the member behind it is down a
// cluster that still holds quorum would be unreachable. The members' client URLs from the cluster's
// most recent record are the fallback: they are tried after the Service's endpoints, in the order
// of that record, and memberList names every endpoint tried when none answers.

// recordClusterIndex indexes the metadata ConfigMaps by "<etcd namespace>/<cluster>" (their labels).
const recordClusterIndex = "etcdCluster"

func recordClusterIndexFunc(obj any) ([]string, error) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Labels[labelNamespace] == "" || cm.Labels[labelCluster] == "" {
		return nil, nil
	}
	return []string{cm.Labels[labelNamespace] + "/" + cm.Labels[labelCluster]}, nil
}

// withRecordedMembers returns endpoints followed by the client URLs, of the same scheme as the
// first endpoint, of the members in the most recent record of cluster ns/cluster that are not among
// them already. Without such a record, or when the class names its endpoints itself, endpoints alone.
func (e *Engine) withRecordedMembers(endpoints []string, ns, cluster string, p snapshotParams) []string {
	if len(p.Endpoints) > 0 || len(endpoints) == 0 {
		return endpoints
	}
	scheme, _, _ := strings.Cut(endpoints[0], "://")
	latest := e.latestRecord(ns, cluster)
	if latest == nil {
		return endpoints
	}
	out := slices.Clone(endpoints)
	for _, m := range latest.Members {
		if m.IsLearner {
			continue // a learner does not serve MemberList until it has caught up
		}
		for _, u := range m.ClientURLs {
			if strings.HasPrefix(u, scheme+"://") && !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out
}

// latestRecord is the most recently created record of cluster ns/cluster that lists members, from
// the metadata cache; nil when there is none.
func (e *Engine) latestRecord(ns, cluster string) *Record {
	objs, err := e.metaFactory.Core().V1().ConfigMaps().Informer().GetIndexer().ByIndex(recordClusterIndex, fmt.Sprintf("%s/%s", ns, cluster))
	if err != nil {
		return nil
	}
	var latest *Record
	for _, o := range objs {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		rec, err := decodeRecord(cm)
		if err != nil || len(rec.Members) == 0 || rec.Namespace != ns || rec.Cluster != cluster {
			continue
		}
		if latest == nil || rec.CreatedAt.After(latest.CreatedAt) {
			latest = rec
		}
	}
	return latest
}
