package driver

import (
	"context"

	"github.com/golang/glog"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// newControllerScheme is the scheme the controllers build object references and events from: the
// core API and the snapshot APIs.
func newControllerScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(snapscheme.AddToScheme(scheme))
	return scheme
}

// startRecorder records events as component until ctx ends, and logs them at V(4).
func startRecorder(ctx context.Context, kube kubernetes.Interface, scheme *runtime.Scheme, component string) record.EventRecorder {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	broadcaster.StartLogging(glog.V(4).Infof)
	return broadcaster.NewRecorder(scheme, corev1.EventSource{Component: component})
}
