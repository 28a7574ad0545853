// Harness for running ecr-credential-provider under the kubelet's own credential
// provider plugin code (k8s.io/kubernetes/pkg/credentialprovider/plugin).
//
// The kubelet package keeps its registered providers (and their in-memory caches)
// in process-global state and panics when a provider name is registered twice.
// Every case therefore runs in its own process: the top-level test re-executes
// the test binary restricted to itself (see isolated), and only that child
// process registers providers, starts the AWS stub and talks to the plugin.
package conformance

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/credentialprovider"
	"k8s.io/kubernetes/pkg/credentialprovider/plugin"
	"k8s.io/kubernetes/pkg/features"
	"k8s.io/kubernetes/pkg/util/parsers"
)

const (
	childEnv     = "ECR_KUBELET_CONFORMANCE_CHILD"
	providerName = "ecr-credential-provider"
	v1API        = "credentialprovider.kubelet.k8s.io/v1"
	v1beta1API   = "credentialprovider.kubelet.k8s.io/v1beta1"
	v1alpha1API  = "credentialprovider.kubelet.k8s.io/v1alpha1"
)

// ---------------------------------------------------------------------------
// Process isolation

// isolated returns true when the caller is the child process that should run
// the case body. In the parent it re-executes the test binary for this one
// test, relays the child's output and fails when the child fails.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	t.Parallel()
	var levels []string
	for _, part := range strings.Split(t.Name(), "/") {
		levels = append(levels, "^"+regexp.QuoteMeta(part)+"$")
	}
	args := []string{"-test.run=" + strings.Join(levels, "/"), "-test.count=1", "-test.v"}
	if deadline, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(deadline).Round(time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		// Prefixed so that test2json does not mistake the child's own
		// "--- PASS" lines for the parent's.
		b.WriteString("child| " + sc.Text() + "\n")
	}
	t.Logf("output of the isolated kubelet process for %s:\n%s", t.Name(), b.String())
	if err != nil {
		t.Fatalf("%s failed in its isolated process: %v", t.Name(), err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s: the isolated process did not report a pass", t.Name())
	}
	return false
}

// ---------------------------------------------------------------------------
// Locations

func pluginBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("ECR_KUBELET_BINARY")
	if p == "" {
		p = filepath.Join("..", "..", ".venv", "bin", providerName)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("plugin executable %s is missing or not executable (set ECR_KUBELET_BINARY): %v", abs, err)
	}
	return abs
}

func pythonExe() string {
	if p := os.Getenv("PYTHON"); p != "" {
		return p
	}
	return "python3"
}

func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// ---------------------------------------------------------------------------
// Clean process environment for the child

// sanitizeEnv removes anything from the developer's or CI's environment that
// could steer the plugin or botocore away from the stub. The kubelet passes its
// own environment to the plugin, so this is the "kubelet's env".
func sanitizeEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AWS_") || (strings.HasPrefix(name, "ECR_KUBELET_") && name != "ECR_KUBELET_BINARY" && name != childEnv) {
			os.Unsetenv(name)
		}
	}
	home := t.TempDir()
	os.Setenv("HOME", home)
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "aws-config-absent"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "aws-credentials-absent"))
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, p := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"} {
		os.Unsetenv(p)
	}
}

// ---------------------------------------------------------------------------
// AWS stub

type stub struct {
	URL string
	cmd *exec.Cmd
}

type stubCall struct {
	Service           string         `json:"service"`
	Action            string         `json:"action"`
	Region            string         `json:"region"`
	AccessKeyID       string         `json:"access_key_id"`
	RegistryIDs       []string       `json:"registry_ids"`
	RoleArn           string         `json:"role_arn"`
	RoleSessionName   string         `json:"role_session_name"`
	WebIdentity       map[string]any `json:"web_identity"`
	Status            int            `json:"status"`
	Password          string         `json:"password"`
	IssuedAccessKeyID string         `json:"issued_access_key_id"`
	Time              float64        `json:"time"`
	Cluster           string         `json:"cluster"`         // eks-auth calls
	AssociationArn    string         `json:"association_arn"` // eks-auth calls
}

func (c stubCall) String() string {
	return fmt.Sprintf("%s:%s region=%s key=%s registry_ids=%v role=%s status=%d", c.Service, c.Action, c.Region, c.AccessKeyID, c.RegistryIDs, c.RoleArn, c.Status)
}

func startStub(t *testing.T) *stub {
	t.Helper()
	script := filepath.Join(repoRoot(t), "tests", "stub_server.py")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("AWS stub %s not found: %v", script, err)
	}
	cmd := exec.Command(pythonExe(), script, "--port", "0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the AWS stub with %s: %v", pythonExe(), err)
	}
	s := &stub{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		lines <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case line := <-lines:
		if !strings.HasPrefix(line, "http://") {
			t.Fatalf("the AWS stub printed %q instead of its URL", line)
		}
		s.URL = line
	case <-time.After(30 * time.Second):
		t.Fatal("the AWS stub did not print its URL within 30s")
	}
	return s
}

func (s *stub) post(t *testing.T, path string, body any) {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(s.URL+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatalf("stub %s: %v", path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stub %s %s: HTTP %d %s", path, data, resp.StatusCode, msg)
	}
}

func (s *stub) configure(t *testing.T, settings map[string]any) { s.post(t, "/_stub/config", settings) }

func (s *stub) calls(t *testing.T) []stubCall {
	t.Helper()
	resp, err := http.Get(s.URL + "/_stub/calls")
	if err != nil {
		t.Fatalf("stub calls: %v", err)
	}
	defer resp.Body.Close()
	var calls []stubCall
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatalf("decoding stub calls: %v", err)
	}
	return calls
}

// since returns the calls made after the first n.
func (s *stub) since(t *testing.T, n int) []stubCall {
	all := s.calls(t)
	if n > len(all) {
		return nil
	}
	return all[n:]
}

// awsEnv is what an operator puts in the config's env list (or the kubelet's env)
// to point the plugin at the stub.
func (s *stub) awsEnv(cacheDir string) map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_ECR":        s.URL,
		"AWS_ENDPOINT_URL_ECR_PUBLIC": s.URL,
		"AWS_ENDPOINT_URL_STS":        s.URL,
		"AWS_ACCESS_KEY_ID":           "AKIAEXAMPLENODEKEY01",
		"AWS_SECRET_ACCESS_KEY":       "node-secret-key-do-not-log-000000000000",
		"AWS_DEFAULT_REGION":          "us-east-1",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"ECR_KUBELET_CACHE_DIR":       cacheDir,
	}
}

func tokenCalls(calls []stubCall) []stubCall {
	var out []stubCall
	for _, c := range calls {
		if c.Action == "GetAuthorizationToken" {
			out = append(out, c)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Kubelet log capture (klog is what the kubelet logs plugin failures through)

var (
	klogMu    sync.Mutex
	klogLines []string
	klogOnce  sync.Once
)

func captureKlog() {
	klogOnce.Do(func() {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		_ = fs.Set("v", "5")
		logger := funcr.New(func(prefix, args string) {
			line := strings.TrimSpace(prefix + " " + args)
			klogMu.Lock()
			klogLines = append(klogLines, line)
			klogMu.Unlock()
			fmt.Fprintln(os.Stderr, "kubelet-log:", line)
		}, funcr.Options{Verbosity: 10, LogTimestamp: false})
		klog.SetLogger(logger)
	})
}

func klogMark() int {
	klogMu.Lock()
	defer klogMu.Unlock()
	return len(klogLines)
}

func klogSince(n int) []string {
	klogMu.Lock()
	defer klogMu.Unlock()
	return append([]string(nil), klogLines[n:]...)
}

func errorLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, `"error"`) || strings.Contains(l, "Failed to provide credentials") {
			out = append(out, l)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Bin dir, recording wrapper and config

// invocation is one recorded run of the plugin by the kubelet.
type invocation struct {
	ID       string
	Args     string
	Request  []byte
	Response []byte
	Stderr   []byte
	Exit     int
}

func (i invocation) String() string {
	return fmt.Sprintf("args=[%s] exit=%d\n  request:  %s\n  response: %s\n  stderr:   %s", i.Args, i.Exit,
		strings.TrimSpace(string(i.Request)), strings.TrimSpace(string(i.Response)), strings.TrimSpace(string(i.Stderr)))
}

type binDir struct {
	Dir    string
	recDir string
}

// newBinDir prepares the kubelet's --image-credential-provider-bin-dir. With
// record=false the plugin executable is symlinked under the provider's name,
// exactly as a node would install it. With record=true the name is a small
// wrapper that records request, response, stderr and exit status of every run
// and then runs the real executable unchanged.
func newBinDir(t *testing.T, name string, record bool) *binDir {
	t.Helper()
	real := pluginBinary(t)
	b := &binDir{Dir: t.TempDir(), recDir: t.TempDir()}
	target := filepath.Join(b.Dir, name)
	if !record {
		if err := os.Symlink(real, target); err != nil {
			t.Fatal(err)
		}
		return b
	}
	script := fmt.Sprintf(`#!/usr/bin/env bash
rec=%q
id="$(date +%%s%%N)-$$"
printf '%%s' "$*" > "$rec/$id.args"
cat > "$rec/$id.req"
%q "$@" < "$rec/$id.req" > "$rec/$id.resp" 2> "$rec/$id.err"
rc=$?
echo "$rc" > "$rec/$id.rc"
cat "$rec/$id.resp"
cat "$rec/$id.err" >&2
exit "$rc"
`, b.recDir, real)
	if err := os.WriteFile(target, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeScript installs a fake plugin (used by the kubelet behaviour probes).
func (b *binDir) writeScript(t *testing.T, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.Dir, name), []byte("#!/usr/bin/env bash\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (b *binDir) invocations(t *testing.T) []invocation {
	t.Helper()
	entries, err := os.ReadDir(b.recDir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".rc") {
			ids = append(ids, strings.TrimSuffix(e.Name(), ".rc"))
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		a, _ := strconv.ParseInt(strings.Split(ids[i], "-")[0], 10, 64)
		c, _ := strconv.ParseInt(strings.Split(ids[j], "-")[0], 10, 64)
		return a < c
	})
	read := func(id, ext string) []byte {
		data, _ := os.ReadFile(filepath.Join(b.recDir, id+"."+ext))
		return data
	}
	var out []invocation
	for _, id := range ids {
		rc, _ := strconv.Atoi(strings.TrimSpace(string(read(id, "rc"))))
		out = append(out, invocation{ID: id, Args: string(read(id, "args")), Request: read(id, "req"),
			Response: read(id, "resp"), Stderr: read(id, "err"), Exit: rc})
	}
	return out
}

type providerSpec struct {
	Name                 string         `json:"name"`
	MatchImages          []string       `json:"matchImages"`
	DefaultCacheDuration string         `json:"defaultCacheDuration"`
	APIVersion           string         `json:"apiVersion"`
	Args                 []string       `json:"args,omitempty"`
	Env                  []envVar       `json:"env,omitempty"`
	TokenAttributes      map[string]any `json:"tokenAttributes,omitempty"`
}

type envVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

func envList(m map[string]string) []envVar {
	var out []envVar
	for k, v := range m {
		out = append(out, envVar{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func writeConfig(t *testing.T, providers ...providerSpec) string {
	t.Helper()
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1",
		"kind":       "CredentialProviderConfig",
		"providers":  providers,
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "credential-provider-config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("CredentialProviderConfig:\n%s", data)
	return path
}

// readJSON decodes a repository data file into v.
func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// eksProvider loads the EKS node configuration the deploy kit ships (generated by scripts/gen-configs).
func eksProvider(t *testing.T) (providerSpec, string) {
	t.Helper()
	path := filepath.Join(repoRoot(t), "examples", "credentialproviders", "eks-default.json")
	var cfg struct {
		Providers []providerSpec `json:"providers"`
	}
	readJSON(t, path, &cfg)
	for _, p := range cfg.Providers {
		if p.Name == providerName {
			return p, path
		}
	}
	t.Fatalf("%s has no provider named %s", path, providerName)
	return providerSpec{}, ""
}

// ---------------------------------------------------------------------------
// Registration and lookups through the kubelet's code

type fakeAPI struct {
	mu              sync.Mutex
	serviceAccounts map[string]*corev1.ServiceAccount // "ns/name"
	tokenRequests   []*authenticationv1.TokenRequest
	issuedTokens    []string
	issuer          string
}

func (f *fakeAPI) getServiceAccount(namespace, name string) (*corev1.ServiceAccount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sa, ok := f.serviceAccounts[namespace+"/"+name]
	if !ok {
		return nil, fmt.Errorf("serviceaccount %s/%s not found", namespace, name)
	}
	return sa.DeepCopy(), nil
}

// getServiceAccountToken stands in for the kubelet's token manager (TokenRequest
// API): it returns a well-formed, unsigned-in-spirit JWT with the claims the
// API server would put in a bound service account token.
func (f *fakeAPI) getServiceAccountToken(namespace, name string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	claims := map[string]any{
		"iss": f.issuer,
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"aud": tr.Spec.Audiences,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": name, "uid": string(tr.UID)},
			"pod":            map[string]any{"name": tr.Spec.BoundObjectRef.Name, "uid": string(tr.Spec.BoundObjectRef.UID)},
		},
	}
	header, _ := json.Marshal(map[string]any{"alg": "RS256", "kid": "conformance-test"})
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	token := enc.EncodeToString(header) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString([]byte(fmt.Sprintf("not-a-signature-%d", len(f.issuedTokens))))
	f.tokenRequests = append(f.tokenRequests, tr.DeepCopy())
	f.issuedTokens = append(f.issuedTokens, token)
	out := tr.DeepCopy()
	out.Status = authenticationv1.TokenRequestStatus{Token: token}
	return out, nil
}

// register calls the kubelet's RegisterCredentialProviderPlugins, as the kubelet
// does at startup with --image-credential-provider-config/-bin-dir.
func register(t *testing.T, configPath, bin string, api *fakeAPI) {
	t.Helper()
	captureKlog()
	if api == nil {
		api = &fakeAPI{}
	}
	if err := plugin.RegisterCredentialProviderPlugins(configPath, bin, api.getServiceAccountToken, api.getServiceAccount); err != nil {
		t.Fatalf("the kubelet refused the credential provider config: %v", err)
	}
}

func setFeatureGate(t *testing.T, gate featuregate.Feature, on bool) {
	t.Helper()
	if err := utilfeature.DefaultMutableFeatureGate.Set(fmt.Sprintf("%s=%t", gate, on)); err != nil {
		t.Fatalf("feature gate %s: %v", gate, err)
	}
	if utilfeature.DefaultFeatureGate.Enabled(gate) != on {
		t.Fatalf("feature gate %s did not switch", gate)
	}
}

var _ = features.KubeletServiceAccountTokenForCredentialProviders

// normalize turns a pod's image reference into what the kubelet looks up
// (repository without tag or digest), with the kubelet's own parser.
func normalize(t *testing.T, image string) string {
	t.Helper()
	repo, _, _, err := parsers.ParseImageName(image)
	if err != nil {
		t.Fatalf("kubelet cannot parse image %q: %v", image, err)
	}
	return repo
}

type pod struct {
	Namespace, Name, UID, ServiceAccount string
}

// lookup resolves pull credentials for a pod's image the way the kubelet's image
// manager does: normalize the reference, build the per-pod external provider
// keyring and call Lookup on it.
func lookup(t *testing.T, p pod, image string) ([]credentialprovider.TrackedAuthConfig, bool) {
	t.Helper()
	repo := normalize(t, image)
	keyring := plugin.NewExternalCredentialProviderDockerKeyring(p.Namespace, p.Name, p.UID, p.ServiceAccount)
	creds, found := keyring.Lookup(repo)
	return creds, found
}

type corev1ServiceAccount = corev1.ServiceAccount

func newSA(namespace, name, uid string, annotations map[string]string) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{}
	sa.Namespace, sa.Name, sa.UID, sa.Annotations = namespace, name, types.UID(uid), annotations
	return sa
}

var nodePod = pod{Namespace: "kube-system", Name: "static-pod", UID: "uid-static"}

// singleCred asserts that exactly one credential came back and returns it.
func singleCred(t *testing.T, image string, creds []credentialprovider.TrackedAuthConfig, found bool) credentialprovider.TrackedAuthConfig {
	t.Helper()
	if !found || len(creds) != 1 {
		t.Fatalf("%s: the kubelet keyring returned found=%t with %d credentials, want exactly 1", image, found, len(creds))
	}
	return creds[0]
}
