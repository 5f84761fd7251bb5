package deploy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const chart = "helm/outbox"

// valueSets are the configurations the chart is checked in: its defaults,
// and every optional part switched on.
var valueSets = map[string][]string{
	"defaults":    nil,
	"all-enabled": {"-f", chart + "/ci/all-enabled-values.yaml"},
}

// manifests is one rendering of the chart, decoded into the API types.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*monitoringv1.ServiceMonitor
	accounts    []*corev1.ServiceAccount
}

// decodeStrict decodes one manifest into the Kubernetes type of its kind.
// Unknown fields, duplicate fields, wrong types and unknown kinds are errors.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("type meta: %w", err)
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = &monitoringv1.ServiceMonitor{}
	default:
		return nil, fmt.Errorf("kind %q %q: not one the chart should render", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// render runs helm template with args and decodes every manifest strictly.
func render(t *testing.T, args ...string) manifests {
	t.Helper()
	h := helm(t)
	var stderr bytes.Buffer
	c := exec.Command(h, append([]string{"template", "outbox", chart, "--namespace", "pipeline", "--kube-version", kubeVersion}, args...)...)
	c.Stderr = &stderr
	out, err := c.Output()
	require.NoErrorf(t, err, "helm template: %s", stderr.String())
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		obj, err := decodeStrict([]byte(doc))
		require.NoErrorf(t, err, "manifest %d:\n%s", i, doc)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		case *monitoringv1.ServiceMonitor:
			m.monitors = append(m.monitors, o)
		case *corev1.ServiceAccount:
			m.accounts = append(m.accounts, o)
		}
	}
	return m
}

// TestStrictDecodeRejectsWrongFields shows the validator fails on what a
// schema validator would: a misspelled field, a field at the wrong level, a
// wrong type, a duplicate key.
func TestStrictDecodeRejectsWrongFields(t *testing.T) {
	t.Parallel()
	base := `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
`
	_, err := decodeStrict([]byte(base))
	require.NoError(t, err)
	for name, bad := range map[string]string{
		"misspelled field":         strings.Replace(base, "selector:", "replica: 2\n  selector:", 1),
		"field at the wrong level": strings.Replace(base, "image: i", "image: i\n          runAsNonRoot: true", 1),
		"wrong type":               strings.Replace(base, "image: i", "image: i\n          ports: 9090", 1),
		"duplicate key":            strings.Replace(base, "{labels: {a: b}}", "{labels: {a: b, a: c}}", 1),
		"unknown kind":             strings.Replace(base, "kind: Deployment", "kind: Deploymnet", 1),
		"ServiceMonitor typo":      "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints: [{port: metrics, honourLabels: true}]\n",
	} {
		_, err := decodeStrict([]byte(bad))
		require.Errorf(t, err, "%s decoded without error", name)
	}
}

// TestChartRendersValidManifests renders the chart with each value set and
// checks what a cluster would reject or run wrongly: selectors that select
// nothing, ports and probes that name no port, secrets without a key, a pod
// that may run as root, a relay without its standby.
func TestChartRendersValidManifests(t *testing.T) {
	t.Parallel()
	for name, args := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := render(t, args...)
			checkManifests(t, m)
			kinds := fmt.Sprintf("%d Deployments, %d Services, %d ConfigMaps, %d PodDisruptionBudgets, %d ServiceMonitors",
				len(m.deployments), len(m.services), len(m.configMaps), len(m.pdbs), len(m.monitors))
			t.Log(name + ": " + kinds)
			components := map[string]bool{}
			for _, d := range m.deployments {
				components[d.Labels["app.kubernetes.io/component"]] = true
			}
			want := []string{"relay", "transform", "sink-payment", "sink-shipping", "lag"}
			if name == "all-enabled" {
				want = []string{"relay", "transform", "sink-payment", "sink-topup", "lag", "ingest", "console"}
				require.Len(t, m.monitors, 1)
			} else {
				require.Empty(t, m.monitors, "ServiceMonitor is off by default")
			}
			for _, c := range want {
				require.Truef(t, components[c], "no %s Deployment", c)
			}
			require.Len(t, m.deployments, len(want))
		})
	}
}

func checkManifests(t *testing.T, m manifests) {
	t.Helper()
	for _, n := range slices.Collect(func(yield func(string) bool) {
		for _, d := range m.deployments {
			yield(d.Name)
		}
		for _, s := range m.services {
			yield(s.Name)
		}
		for n := range m.configMaps {
			yield(n)
		}
	}) {
		require.Emptyf(t, validation.IsDNS1123Label(n), "name %q", n)
	}
	podsFor := func(sel labels.Selector) []*appsv1.Deployment {
		var out []*appsv1.Deployment
		for _, d := range m.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				out = append(out, d)
			}
		}
		return out
	}
	for _, d := range m.deployments {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		require.NoError(t, err)
		require.Truef(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "%s: selector does not match its pods", d.Name)
		require.Lenf(t, podsFor(sel), 1, "%s: its selector matches another Deployment's pods", d.Name)
		checkPod(t, m, d)
	}
	relay := findDeployment(t, m, "relay")
	require.EqualValues(t, 2, *relay.Spec.Replicas, "the relay runs with a standby")
	require.Equal(t, "/healthz", relay.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path,
		"a standby relay is not ready by design: /readyz would block rollouts and drains")

	for _, s := range m.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		ds := podsFor(sel)
		require.Lenf(t, ds, 1, "Service %s selects %d Deployments", s.Name, len(ds))
		for _, p := range s.Spec.Ports {
			require.Truef(t, hasPort(ds[0].Spec.Template.Spec.Containers[0], p.TargetPort.String()),
				"Service %s: targetPort %s is not a port of %s", s.Name, p.TargetPort.String(), ds[0].Name)
		}
		if strings.HasSuffix(s.Name, "-metrics") {
			require.Truef(t, s.Spec.PublishNotReadyAddresses, "%s: a standby or a stage waiting out an outage must still be scraped", s.Name)
		}
	}
	for _, p := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		require.NoError(t, err)
		ds := podsFor(sel)
		require.Lenf(t, ds, 1, "PodDisruptionBudget %s selects %d Deployments", p.Name, len(ds))
		if p.Spec.MinAvailable != nil {
			require.Lessf(t, p.Spec.MinAvailable.IntValue(), int(*ds[0].Spec.Replicas), "%s: minAvailable blocks every drain", p.Name)
		}
	}
	for _, sm := range m.monitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		require.NoError(t, err)
		scraped := 0
		for _, s := range m.services {
			if sel.Matches(labels.Set(s.Labels)) {
				require.Truef(t, slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == sm.Spec.Endpoints[0].Port }),
					"ServiceMonitor selects %s, which has no port %q", s.Name, sm.Spec.Endpoints[0].Port)
				scraped++
			}
		}
		require.Equal(t, len(m.deployments), scraped, "every stage is scraped")
		require.True(t, sm.Spec.Endpoints[0].HonorLabels, "the sink's endpoint label must not become exported_endpoint")
	}
}

func findDeployment(t *testing.T, m manifests, component string) *appsv1.Deployment {
	t.Helper()
	for _, d := range m.deployments {
		if d.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	t.Fatalf("no %s Deployment", component)
	return nil
}

func hasPort(c corev1.Container, name string) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name || fmt.Sprint(p.ContainerPort) == name })
}

func checkPod(t *testing.T, m manifests, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	require.NotNilf(t, spec.SecurityContext, "%s: no pod securityContext", d.Name)
	require.Truef(t, spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot, "%s: may run as root", d.Name)
	require.Truef(t, spec.SecurityContext.RunAsUser != nil && *spec.SecurityContext.RunAsUser != 0, "%s: runs as uid 0", d.Name)
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	require.NotNilf(t, c.SecurityContext, "%s: no container securityContext", d.Name)
	require.Falsef(t, *c.SecurityContext.AllowPrivilegeEscalation, "%s: allows privilege escalation", d.Name)
	require.Truef(t, *c.SecurityContext.ReadOnlyRootFilesystem, "%s: writable root filesystem", d.Name)
	require.Contains(t, c.SecurityContext.Capabilities.Drop, corev1.Capability("ALL"))
	require.Falsef(t, c.Resources.Requests.Cpu().IsZero(), "%s: no CPU request", d.Name)
	require.Falsef(t, c.Resources.Limits.Memory().IsZero(), "%s: no memory limit", d.Name)
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		require.NotNilf(t, p, "%s: a probe is missing", d.Name)
		switch {
		case p.HTTPGet != nil:
			require.Truef(t, hasPort(c, p.HTTPGet.Port.String()), "%s: probe port %s", d.Name, p.HTTPGet.Port.String())
			require.Contains(t, []string{"/healthz", "/readyz"}, p.HTTPGet.Path)
		case p.TCPSocket != nil:
			require.Truef(t, hasPort(c, p.TCPSocket.Port.String()), "%s: probe port %s", d.Name, p.TCPSocket.Port.String())
		default:
			t.Fatalf("%s: a probe with no handler", d.Name)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil {
			require.Containsf(t, m.configMaps, v.ConfigMap.Name, "%s: volume %s: no ConfigMap %s", d.Name, v.Name, v.ConfigMap.Name)
		}
	}
	for _, vm := range c.VolumeMounts {
		require.Containsf(t, volumes, vm.Name, "%s: mount %s has no volume", d.Name, vm.Name)
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			require.Containsf(t, m.configMaps, ef.ConfigMapRef.Name, "%s: envFrom names no rendered ConfigMap", d.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			require.NotNilf(t, e.ValueFrom.SecretKeyRef, "%s: %s", d.Name, e.Name)
			require.NotEmptyf(t, e.ValueFrom.SecretKeyRef.Name, "%s: %s names no Secret", d.Name, e.Name)
			require.NotEmptyf(t, e.ValueFrom.SecretKeyRef.Key, "%s: %s names no key", d.Name, e.Name)
		}
	}
	require.Falsef(t, *spec.AutomountServiceAccountToken, "%s: mounts an API token it never uses", d.Name)
}

// TestChartCommandsAreAccepted runs every container's command line, with
// its environment as the kubelet would build it (ConfigMap, Secrets, files
// mounted), through the real binary: `--check` where the command has it
// (flags, variables and settings validated without starting), else the flags
// against the command's own list. A misspelled flag or a value the binary
// rejects fails here.
func TestChartCommandsAreAccepted(t *testing.T) {
	t.Parallel()
	bin := outboxBinary(t)
	for name, args := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := render(t, args...)
			for _, d := range m.deployments {
				checkCommand(t, bin, m, d)
			}
		})
	}
}

func checkCommand(t *testing.T, bin string, m manifests, d *appsv1.Deployment) {
	t.Helper()
	c := d.Spec.Template.Spec.Containers[0]
	root := t.TempDir()
	// Files the pod would see: ConfigMap volumes as written, the Kafka TLS
	// secret as a generated CA and client pair.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		dir := filepath.Join(root, vm.MountPath)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		mounts[vm.MountPath] = dir
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			switch {
			case v.ConfigMap != nil:
				for k, val := range m.configMaps[v.ConfigMap.Name].Data {
					require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(val), 0o600))
				}
			case v.Secret != nil && vm.Name == "kafka-tls":
				writeTestTLS(t, dir)
			}
		}
	}
	// One pass, longest mount path first, so a path is rewritten once.
	var pairs []string
	for _, from := range slices.SortedFunc(maps.Keys(mounts), func(a, b string) int { return len(b) - len(a) }) {
		pairs = append(pairs, from+"/", mounts[from]+"/")
	}
	remap := strings.NewReplacer(pairs...).Replace
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			for k, v := range m.configMaps[ef.ConfigMapRef.Name].Data {
				env[k] = remap(v)
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.Name == "OUTBOX_DATABASE_URL":
			env[e.Name] = "postgres://outbox:secret@127.0.0.1:1/outbox"
		case strings.HasPrefix(e.Name, "OUTBOX_SECRET_HEADER_"):
			env[e.Name] = "Authorization: Bearer secret"
		default:
			env[e.Name] = "secret"
		}
	}
	// The ingest sources file names the variables its Secret must hold.
	for _, file := range mounts {
		b, _ := os.ReadFile(filepath.Join(file, "sources.yaml"))
		for _, m := range regexp.MustCompile(`(?m)^\s*-\s*([A-Z][A-Z0-9_]+)\s*$`).FindAllStringSubmatch(string(b), -1) {
			env[m[1]] = "whsec_test"
		}
	}
	// $(VAR) in args expands from the container's env, as the kubelet does.
	var args []string
	for _, a := range c.Args {
		a = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(a, func(s string) string {
			if v, ok := env[s[2:len(s)-1]]; ok {
				return v
			}
			return s
		})
		args = append(args, remap(a))
	}
	require.Equal(t, []string{"/usr/local/bin/outbox"}, c.Command)
	var sub []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		sub = append(sub, a)
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	help, err := exec.Command(bin, append(slices.Clone(sub), "--help")...).CombinedOutput()
	require.NoErrorf(t, err, "%s: `outbox %s --help`: %s", d.Name, strings.Join(sub, " "), help)
	require.NotContainsf(t, string(help), "Available Commands", "%s: `outbox %s` is a group, not a command", d.Name, strings.Join(sub, " "))
	if !strings.Contains(string(help), "--check ") {
		for _, a := range args[len(sub):] {
			flag, _, _ := strings.Cut(a, "=")
			require.Containsf(t, string(help), " "+flag+" ", "%s: `outbox %s` has no flag %s", d.Name, strings.Join(sub, " "), flag)
		}
		return
	}
	cmd := exec.Command(bin, append(args, "--check")...)
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	require.NoErrorf(t, err, "%s: `outbox %s --check` refused its command line:\n%s", d.Name, strings.Join(args, " "), out)
	// --check prints where each flag's value came from: the chart's values
	// must reach the binary.
	for _, a := range args[len(sub):] {
		flag, _, _ := strings.Cut(a, "=")
		require.Regexpf(t, `(?m)^`+regexp.QuoteMeta(flag)+`\s.*\sflag$`, string(out), "%s: %s not taken from the command line", d.Name, flag)
	}
	// A variable set for this container alone (not from the shared
	// ConfigMap) must be one a flag reads.
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "OUTBOX_") && !strings.HasPrefix(e.Name, "OUTBOX_SECRET_HEADER_") {
			require.Regexpf(t, `(?m)\senv `+regexp.QuoteMeta(e.Name)+`$`, string(out), "%s: no flag of `outbox %s` reads %s", d.Name, strings.Join(sub, " "), e.Name)
		}
	}
	for k := range env {
		if !strings.HasPrefix(k, "OUTBOX_") || strings.HasPrefix(k, "OUTBOX_SECRET_HEADER_") {
			continue
		}
		// Shared variables are read by the commands that have the flag.
		// A command's own variables are OUTBOX_<COMMAND>_<FLAG>.
		name := strings.TrimPrefix(k, "OUTBOX_")
		if own, ok := strings.CutPrefix(name, strings.ToUpper(sub[0])+"_"); ok {
			name = own
		}
		flag := "--" + strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if strings.Contains(string(help), " "+flag+" ") && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, flag) }) {
			require.Regexpf(t, `(?m)^`+regexp.QuoteMeta(flag)+`\s.*env `+k+`$`, string(out), "%s: %s not read from %s", d.Name, flag, k)
		}
	}
}

// writeTestTLS writes a self-signed CA and a client pair signed by it, as
// the Kafka TLS Secret would hold them (ca.crt, tls.crt, tls.key).
func writeTestTLS(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outbox test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), crt, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
}
