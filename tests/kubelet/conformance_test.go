package conformance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/kubernetes/pkg/credentialprovider"
	"k8s.io/kubernetes/pkg/features"
)

// familyCase is one image per ECR host family, from tests/data/ecr-host-families.json: the Python
// tests check that each matches exactly one pattern of the EKS config, and the other way round.
type familyCase struct {
	Image   string `json:"image"`   // as written in a pod spec
	Service string `json:"service"` // stub service that must issue the token
	Region  string `json:"region"`  // region the token must be requested in
}

func hostFamilies(t *testing.T) []familyCase {
	t.Helper()
	var families []familyCase
	readJSON(t, filepath.Join(repoRoot(t), "tests", "data", "ecr-host-families.json"), &families)
	if len(families) == 0 {
		t.Fatal("no ECR host families in tests/data/ecr-host-families.json")
	}
	return families
}

// expectIssued asserts that the credential is username AWS plus a password the
// stub issued (status 200) for the given service and region, among calls.
func expectIssued(t *testing.T, image string, cred credentialprovider.TrackedAuthConfig, calls []stubCall, service, region string) stubCall {
	t.Helper()
	if cred.Username != "AWS" {
		t.Errorf("%s: username %q, want AWS", image, cred.Username)
	}
	for _, c := range tokenCalls(calls) {
		if c.Status == 200 && c.Password != "" && c.Password == cred.Password {
			if c.Service != service || c.Region != region {
				t.Errorf("%s: password was issued by %s in %s, want %s in %s", image, c.Service, c.Region, service, region)
			}
			return c
		}
	}
	t.Errorf("%s: the kubelet returned a password the stub never issued; stub calls: %v", image, calls)
	return stubCall{}
}

// TestEKSConfigAllHostFamilies registers the EKS node configuration unchanged,
// with the plugin symlinked into the bin dir and AWS settings in the kubelet's
// own environment, then looks up one image of every host family.
func TestEKSConfigAllHostFamilies(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	for k, v := range s.awsEnv(t.TempDir()) {
		os.Setenv(k, v) // the kubelet's own environment, inherited by the plugin
	}
	p, src := eksProvider(t)
	t.Logf("EKS provider from %s", src)
	bin := newBinDir(t, providerName, false)
	register(t, writeConfig(t, p), bin.Dir, nil)

	for _, fc := range hostFamilies(t) {
		t.Run(strings.SplitN(fc.Image, "/", 2)[0], func(t *testing.T) {
			before := len(s.calls(t))
			mark := klogMark()
			creds, found := lookup(t, nodePod, fc.Image)
			if errs := errorLines(klogSince(mark)); len(errs) > 0 {
				t.Errorf("the kubelet logged errors: %s", strings.Join(errs, "\n"))
			}
			cred := singleCred(t, fc.Image, creds, found)
			expectIssued(t, fc.Image, cred, s.since(t, before), fc.Service, fc.Region)
		})
	}
}

// TestEnvFromConfigOverridesKubeletEnv: the config's env wins over the kubelet's
// environment (here the kubelet env points ECR at a dead port).
func TestEnvFromConfigOverridesKubeletEnv(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	os.Setenv("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:9")
	os.Setenv("AWS_ACCESS_KEY_ID", "AKIAKUBELETENVKEY000")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "kubelet-env-secret")
	p, _ := eksProvider(t)
	p.Env = envList(s.awsEnv(t.TempDir()))
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, nil)

	image := "123456789012.dkr.ecr.us-west-2.amazonaws.com/app"
	creds, found := lookup(t, nodePod, image)
	cred := singleCred(t, image, creds, found)
	c := expectIssued(t, image, cred, s.calls(t), "ecr", "us-west-2")
	if c.AccessKeyID != "AKIAEXAMPLENODEKEY01" {
		t.Errorf("ECR was called with key %q, want the config env's AKIAEXAMPLENODEKEY01", c.AccessKeyID)
	}
}

func testAPIVersion(t *testing.T, apiVersion string) {
	sanitizeEnv(t)
	s := startStub(t)
	p, _ := eksProvider(t)
	p.APIVersion = apiVersion
	p.Env = envList(s.awsEnv(t.TempDir()))
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, nil)

	// One private and one public ECR image: the first of each service.
	var picked []familyCase
	seen := map[string]bool{}
	for _, fc := range hostFamilies(t) {
		if !seen[fc.Service] {
			seen[fc.Service] = true
			picked = append(picked, fc)
		}
	}
	for _, fc := range picked {
		mark := klogMark()
		before := len(s.calls(t))
		creds, found := lookup(t, nodePod, fc.Image)
		if errs := errorLines(klogSince(mark)); len(errs) > 0 {
			t.Errorf("the kubelet logged errors: %s", strings.Join(errs, "\n"))
		}
		cred := singleCred(t, fc.Image, creds, found)
		expectIssued(t, fc.Image, cred, s.since(t, before), fc.Service, fc.Region)
	}
	for _, inv := range bin.invocations(t) {
		var req, resp map[string]any
		if err := json.Unmarshal(inv.Request, &req); err != nil {
			t.Fatalf("request is not JSON: %v\n%s", err, inv)
		}
		if req["apiVersion"] != apiVersion || req["kind"] != "CredentialProviderRequest" {
			t.Errorf("kubelet sent %v/%v, want %s", req["apiVersion"], req["kind"], apiVersion)
		}
		if err := json.Unmarshal(inv.Response, &resp); err != nil {
			t.Fatalf("response is not JSON: %v\n%s", err, inv)
		}
		if resp["apiVersion"] != apiVersion {
			t.Errorf("plugin answered %v, want %s\n%s", resp["apiVersion"], apiVersion, inv)
		}
	}
}

func TestAPIVersionV1beta1(t *testing.T) {
	if !isolated(t) {
		return
	}
	testAPIVersion(t, v1beta1API)
}

func TestAPIVersionV1alpha1(t *testing.T) {
	if !isolated(t) {
		return
	}
	testAPIVersion(t, v1alpha1API)
}

// TestForeignHosts: hosts outside the EKS list never reach the plugin; hosts a
// broad pattern sends to the plugin get a valid, empty answer (no credentials,
// no AWS call, nothing logged as an error by the kubelet).
func TestForeignHosts(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	env := envList(s.awsEnv(t.TempDir()))

	eks, _ := eksProvider(t)
	eks.Env = env
	eksBin := newBinDir(t, providerName, true)

	// A second provider with catch-all patterns: the same executable under
	// another name in the kubelet's (single) bin dir, recorded separately.
	broad := providerSpec{
		Name: "ecr-broad",
		MatchImages: []string{"*", "*.*", "*.*.*", "*.*.*.*", "*.*.*.*.*", "*.*.*.*.*.*", "*.*.*.*.*.*.*",
			"*.*.*.*.*.*.*.*", "*.*.*:5000"},
		DefaultCacheDuration: "1h",
		APIVersion:           v1API,
		Env:                  env,
	}
	broadBin := newBinDir(t, "ecr-broad", true)
	if err := os.Symlink(broadBin.Dir+"/ecr-broad", eksBin.Dir+"/ecr-broad"); err != nil {
		t.Fatal(err)
	}
	register(t, writeConfig(t, eks, broad), eksBin.Dir, nil)

	// Not matched by the EKS list; all of them matched by the broad provider.
	foreign := []string{
		"nginx:1.27",
		"ghcr.io/org/app:v1",
		"registry.example.com:5000/team/app",
		"localhost/app",
		"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/app",
		"123456789012.dkr.ecr.us-east-1.amazonaws.lol/app",
		"123456789012.dkr.ecr.us-east-1.amazonaws.cat/app",
	}
	// Matched by the EKS list's globs (and the broad provider) but not ECR hosts.
	lookalikes := []string{
		"12345678901.dkr.ecr.us-east-1.amazonaws.com/app",
		"1234567890123.dkr.ecr.us-east-1.amazonaws.com/app",
		"evil.dkr.ecr.us-east-1.amazonaws.com/app",
	}
	for _, image := range append(append([]string{}, foreign...), lookalikes...) {
		mark := klogMark()
		creds, found := lookup(t, nodePod, image)
		if found || len(creds) > 0 {
			t.Errorf("%s: the kubelet returned credentials %+v, want none", image, creds)
		}
		if errs := errorLines(klogSince(mark)); len(errs) > 0 {
			t.Errorf("%s: the kubelet logged errors (a valid empty answer is expected): %s", image, strings.Join(errs, "\n"))
		}
	}
	if n := len(eksBin.invocations(t)); n != len(lookalikes) {
		t.Errorf("the EKS provider ran %d times, want %d (only for the look-alikes its globs match)", n, len(lookalikes))
	}
	if n := len(broadBin.invocations(t)); n != len(foreign)+len(lookalikes) {
		t.Errorf("the broad provider ran %d times, want %d", n, len(foreign)+len(lookalikes))
	}
	for _, inv := range append(eksBin.invocations(t), broadBin.invocations(t)...) {
		if inv.Exit != 0 {
			t.Errorf("plugin failed for a foreign host:\n%s", inv)
		}
	}
	if calls := tokenCalls(s.calls(t)); len(calls) > 0 {
		t.Errorf("foreign hosts caused AWS token calls: %v", calls)
	}
	t.Logf("sample exchange: %s", broadBin.invocations(t)[0])
}

// TestMirror: --mirror maps a pull-through host to an ECR registry; the kubelet
// gets credentials keyed by the mirror host.
func TestMirror(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	p, _ := eksProvider(t)
	p.MatchImages = append(p.MatchImages, "mirror.example.com")
	p.Args = []string{"--mirror", "mirror.example.com=123456789012.dkr.ecr.us-west-2.amazonaws.com"}
	p.Env = envList(s.awsEnv(t.TempDir()))
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, nil)

	image := "mirror.example.com/library/nginx:1"
	creds, found := lookup(t, nodePod, image)
	cred := singleCred(t, image, creds, found)
	expectIssued(t, image, cred, s.calls(t), "ecr", "us-west-2")
	t.Logf("%s", bin.invocations(t))
}

// TestKubeletCachesPerRegistry: the plugin answers cacheKeyType Registry, so a
// second image of the same registry is served from the kubelet's cache; another
// registry runs the plugin again; concurrent lookups of one image run it once.
func TestKubeletCachesPerRegistry(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	p, _ := eksProvider(t)
	p.Env = envList(s.awsEnv(t.TempDir()))
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, nil)

	runs := func() int { return len(bin.invocations(t)) }
	get := func(image string) credentialprovider.TrackedAuthConfig {
		t.Helper()
		creds, found := lookup(t, nodePod, image)
		return singleCred(t, image, creds, found)
	}

	a := get("123456789012.dkr.ecr.us-east-1.amazonaws.com/app-one:1")
	if runs() != 1 {
		t.Fatalf("plugin ran %d times after the first lookup", runs())
	}
	b := get("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app-two:2")
	a2 := get("123456789012.dkr.ecr.us-east-1.amazonaws.com/app-one:1")
	if runs() != 1 {
		t.Errorf("plugin ran %d times for one registry, want 1 (kubelet cache per registry)", runs())
	}
	if b.Password != a.Password || a2.Password != a.Password {
		t.Errorf("cached lookups returned different passwords")
	}
	if n := len(tokenCalls(s.calls(t))); n != 1 {
		t.Errorf("%d ECR token calls for one registry, want 1", n)
	}

	other := get("210987654321.dkr.ecr.us-east-1.amazonaws.com/app")
	if runs() != 2 {
		t.Errorf("plugin ran %d times after a second registry, want 2", runs())
	}
	if other.Password == "" {
		t.Error("empty password for the second registry")
	}

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds, found := lookup(t, nodePod, "123456789012.dkr.ecr.us-west-2.amazonaws.com/burst")
			if !found || len(creds) != 1 {
				t.Errorf("concurrent lookup got found=%t, %d creds", found, len(creds))
			}
		}()
	}
	wg.Wait()
	if runs() != 3 {
		t.Errorf("plugin ran %d times after 4 concurrent lookups of one image, want 3 (single-flight per image)", runs())
	}

	for _, inv := range bin.invocations(t) {
		var resp struct {
			CacheKeyType  string `json:"cacheKeyType"`
			CacheDuration string `json:"cacheDuration"`
		}
		if err := json.Unmarshal(inv.Response, &resp); err != nil {
			t.Fatalf("%v\n%s", err, inv)
		}
		if resp.CacheKeyType != "Registry" {
			t.Errorf("cacheKeyType %q, want Registry", resp.CacheKeyType)
		}
		if resp.CacheDuration != "" {
			d, err := time.ParseDuration(resp.CacheDuration)
			if err != nil || d <= 0 || d > 12*time.Hour {
				t.Errorf("cacheDuration %q: want a positive Go duration of at most the 12h token lifetime", resp.CacheDuration)
			}
		}
	}
	t.Logf("first exchange: %s", bin.invocations(t)[0])
}

// TestFailuresAreNotCached: AWS errors leave the kubelet without credentials
// (pull proceeds anonymously, nothing crashes) and are not cached: once AWS
// recovers, the next lookup of the same registry succeeds.
func TestFailuresAreNotCached(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	s := startStub(t)
	p, _ := eksProvider(t)
	env := s.awsEnv(t.TempDir())
	p.Env = envList(env)
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, nil)

	cases := []struct {
		name     string
		settings map[string]any
		recover  map[string]any
		image    string
	}{
		{"deny", map[string]any{"deny": true}, map[string]any{"deny": false}, "123456789012.dkr.ecr.us-east-1.amazonaws.com/app"},
		{"fail_all", map[string]any{"fail_all": true}, map[string]any{"fail_all": false}, "123456789012.dkr.ecr.eu-central-1.amazonaws.com/app"},
		{"public-deny", map[string]any{"deny": true}, map[string]any{"deny": false}, "public.ecr.aws/nginx/nginx"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.configure(t, tc.settings)
			runsBefore := len(bin.invocations(t))
			callsBefore := len(s.calls(t))
			mark := klogMark()
			start := time.Now()
			creds, found := lookup(t, nodePod, tc.image)
			took := time.Since(start)
			if found || len(creds) > 0 {
				t.Errorf("credentials returned during the outage: %+v", creds)
			}
			invs := bin.invocations(t)[runsBefore:]
			if len(invs) != 1 {
				t.Fatalf("plugin ran %d times, want 1", len(invs))
			}
			t.Logf("outage exchange (%s): %s", took.Round(time.Millisecond), invs[0])
			t.Logf("kubelet said: %s", strings.Join(errorLines(klogSince(mark)), "\n"))
			t.Logf("stub calls during the outage: %v", s.since(t, callsBefore))
			if took > 55*time.Second {
				t.Errorf("the plugin took %s: too close to the kubelet's 1 minute kill", took)
			}
			for _, secret := range []string{env["AWS_SECRET_ACCESS_KEY"]} {
				if strings.Contains(string(invs[0].Stderr)+string(invs[0].Response), secret) {
					t.Errorf("the plugin leaked the secret access key into its output")
				}
			}

			s.configure(t, tc.recover)
			creds, found = lookup(t, nodePod, tc.image)
			if !found || len(creds) != 1 {
				t.Fatalf("after recovery the kubelet still returned found=%t, %d creds: the failure was cached (last exchange: %s)",
					found, len(creds), bin.invocations(t)[len(bin.invocations(t))-1])
			}
			if n := len(bin.invocations(t)) - runsBefore; n != 2 {
				t.Errorf("plugin ran %d times across outage and recovery, want 2", n)
			}
			calls := s.calls(t)
			expectIssued(t, tc.image, creds[0], calls, map[bool]string{true: "ecr-public", false: "ecr"}[strings.HasPrefix(tc.image, "public.")],
				map[bool]string{true: "eu-central-1", false: "us-east-1"}[strings.Contains(tc.image, "eu-central-1")])
		})
	}

	t.Run("throttled-then-ok", func(t *testing.T) {
		s.configure(t, map[string]any{"throttle_next": 2})
		image := "123456789012.dkr.ecr.ap-southeast-2.amazonaws.com/app"
		before := len(s.calls(t))
		creds, found := lookup(t, nodePod, image)
		if !found || len(creds) != 1 {
			t.Fatalf("2 throttled calls then success: the kubelet got found=%t (%d creds); stub calls %v; exchange %s",
				found, len(creds), s.since(t, before), bin.invocations(t)[len(bin.invocations(t))-1])
		}
		expectIssued(t, image, creds[0], s.since(t, before), "ecr", "ap-southeast-2")
	})
}

// TestServiceAccountTokens: tokenAttributes make the kubelet mint a bound SA
// token and pass it plus the role annotation; the plugin exchanges it with
// AssumeRoleWithWebIdentity and calls ECR with the assumed role's key.
func TestServiceAccountTokens(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	setFeatureGate(t, features.KubeletServiceAccountTokenForCredentialProviders, true)
	s := startStub(t)
	const annotation = "eks.amazonaws.com/ecr-role-arn"
	const audience = "sts.amazonaws.com"
	roleA := "arn:aws:iam::111122223333:role/pull-a"
	roleB := "arn:aws:iam::111122223333:role/pull-b"
	api := &fakeAPI{issuer: "https://oidc.eks.us-east-1.amazonaws.com/id/CONFORMANCE", serviceAccounts: map[string]*corev1ServiceAccount{}}
	api.serviceAccounts["team-a/puller"] = newSA("team-a", "puller", "uid-sa-a", map[string]string{annotation: roleA, "other": "x"})
	api.serviceAccounts["team-b/puller"] = newSA("team-b", "puller", "uid-sa-b", map[string]string{annotation: roleB})
	api.serviceAccounts["team-c/plain"] = newSA("team-c", "plain", "uid-sa-c", nil)

	p, _ := eksProvider(t)
	p.Env = envList(s.awsEnv(t.TempDir()))
	p.Args = []string{"--sa-role-annotation", annotation, "--sa-without-role", "node"}
	p.TokenAttributes = map[string]any{
		"serviceAccountTokenAudience":          audience,
		"cacheType":                            "ServiceAccount",
		"requireServiceAccount":                false,
		"optionalServiceAccountAnnotationKeys": []string{annotation},
	}
	bin := newBinDir(t, providerName, true)
	register(t, writeConfig(t, p), bin.Dir, api)

	image := "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1"
	runs := func() int { return len(bin.invocations(t)) }

	t.Run("annotated-sa-assumes-role", func(t *testing.T) {
		before := len(s.calls(t))
		podA := pod{"team-a", "web-1", "uid-pod-1", "puller"}
		creds, found := lookup(t, podA, image)
		cred := singleCred(t, image, creds, found)
		calls := s.since(t, before)
		var sts, ecr *stubCall
		for i := range calls {
			c := calls[i]
			if c.Action == "AssumeRoleWithWebIdentity" && sts == nil {
				sts = &calls[i]
			}
			if c.Action == "GetAuthorizationToken" && c.Password == cred.Password && cred.Password != "" {
				ecr = &calls[i]
			}
		}
		if sts == nil || ecr == nil {
			t.Fatalf("want AssumeRoleWithWebIdentity then ECR; stub calls: %v\nexchange: %s", calls, bin.invocations(t)[runs()-1])
		}
		if sts.Status != 200 || sts.RoleArn != roleA {
			t.Errorf("AssumeRoleWithWebIdentity: status %d role %q, want 200 %q", sts.Status, sts.RoleArn, roleA)
		}
		if sub, _ := sts.WebIdentity["sub"].(string); sub != "system:serviceaccount:team-a:puller" {
			t.Errorf("web identity sub %v", sts.WebIdentity)
		}
		if aud := sts.WebIdentity["aud"]; !strings.Contains(toJSON(aud), audience) {
			t.Errorf("web identity aud %v, want %s", aud, audience)
		}
		if !strings.HasPrefix(ecr.AccessKeyID, "ASIA") || ecr.AccessKeyID != sts.IssuedAccessKeyID {
			t.Errorf("ECR called with key %q, want the assumed role's %q", ecr.AccessKeyID, sts.IssuedAccessKeyID)
		}
		if sts.Time > ecr.Time {
			t.Errorf("ECR was called before STS")
		}
		if cred.Username != "AWS" || ecr.Region != "us-east-1" {
			t.Errorf("credential %q from %s", cred.Username, ecr.Region)
		}
		// What the kubelet asked the API server for and passed to the plugin.
		tr := api.tokenRequests[len(api.tokenRequests)-1]
		if len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != audience || tr.Spec.BoundObjectRef == nil ||
			tr.Spec.BoundObjectRef.Kind != "Pod" || tr.Spec.BoundObjectRef.Name != "web-1" || string(tr.Spec.BoundObjectRef.UID) != "uid-pod-1" {
			t.Errorf("unexpected TokenRequest %+v", tr.Spec)
		}
		var req map[string]any
		inv := bin.invocations(t)[runs()-1]
		_ = json.Unmarshal(inv.Request, &req)
		if req["serviceAccountToken"] != api.issuedTokens[len(api.issuedTokens)-1] {
			t.Errorf("request did not carry the minted token: %v", req)
		}
		if toJSON(req["serviceAccountAnnotations"]) != toJSON(map[string]string{annotation: roleA}) {
			t.Errorf("request annotations %v, want only the configured key", req["serviceAccountAnnotations"])
		}
		if utilfeature.DefaultFeatureGate.Enabled(features.KubeletEnsureSecretPulledImages) {
			src := cred.Source
			if src == nil || src.ServiceAccount == nil || src.ServiceAccount.UID != "uid-sa-a" || src.ServiceAccount.Namespace != "team-a" {
				t.Errorf("credential source %+v, want service account team-a/puller", src)
			}
		}
	})

	t.Run("same-sa-other-pod-is-cached", func(t *testing.T) {
		n, tokens := runs(), len(api.issuedTokens)
		creds, found := lookup(t, pod{"team-a", "web-2", "uid-pod-2", "puller"}, "123456789012.dkr.ecr.us-east-1.amazonaws.com/other")
		singleCred(t, "other", creds, found)
		if runs() != n {
			t.Errorf("plugin ran again for the same service account and registry (cacheType ServiceAccount)")
		}
		// docs/conformance.md, finding 6: the kubelet mints a token before it checks its cache.
		if len(api.issuedTokens) == tokens {
			t.Errorf("no service account token minted on a cache hit: the kubelet changed (docs/conformance.md, finding 6)")
		}
	})

	t.Run("other-sa-other-role", func(t *testing.T) {
		n, before := runs(), len(s.calls(t))
		creds, found := lookup(t, pod{"team-b", "api-1", "uid-pod-3", "puller"}, image)
		cred := singleCred(t, image, creds, found)
		if runs() != n+1 {
			t.Errorf("plugin ran %d times for a different service account, want 1", runs()-n)
		}
		calls := s.since(t, before)
		var role string
		for _, c := range calls {
			if c.Action == "AssumeRoleWithWebIdentity" {
				role = c.RoleArn
			}
		}
		if role != roleB {
			t.Errorf("assumed %q, want %q; calls %v", role, roleB, calls)
		}
		c := expectIssued(t, image, cred, calls, "ecr", "us-east-1")
		if !strings.HasPrefix(c.AccessKeyID, "ASIA") {
			t.Errorf("ECR called with %q", c.AccessKeyID)
		}
	})

	t.Run("sa-without-role-uses-node", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"team-c", "job-1", "uid-pod-4", "plain"}, image)
		cred := singleCred(t, image, creds, found)
		calls := s.since(t, before)
		c := expectIssued(t, image, cred, calls, "ecr", "us-east-1")
		if c.AccessKeyID != "AKIAEXAMPLENODEKEY01" {
			t.Errorf("ECR called with %q, want the node key", c.AccessKeyID)
		}
		for _, c := range calls {
			if c.Service == "sts" && c.Action == "AssumeRoleWithWebIdentity" {
				t.Errorf("unexpected %v", c)
			}
		}
	})

	t.Run("static-pod-without-sa-uses-node", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"kube-system", "static", "uid-static", ""}, "123456789012.dkr.ecr.us-west-2.amazonaws.com/app")
		cred := singleCred(t, "static", creds, found)
		c := expectIssued(t, "static", cred, s.since(t, before), "ecr", "us-west-2")
		if c.AccessKeyID != "AKIAEXAMPLENODEKEY01" {
			t.Errorf("ECR called with %q, want the node key", c.AccessKeyID)
		}
		var req map[string]any
		_ = json.Unmarshal(bin.invocations(t)[runs()-1].Request, &req)
		if _, ok := req["serviceAccountToken"]; ok {
			t.Errorf("kubelet passed a token for a pod without service account: %v", req)
		}
	})

	t.Run("web-identity-denied-is-not-cached", func(t *testing.T) {
		api.serviceAccounts["team-d/puller"] = newSA("team-d", "puller", "uid-sa-d", map[string]string{annotation: "arn:aws:iam::111122223333:role/pull-d"})
		podD := pod{"team-d", "web-1", "uid-pod-5", "puller"}
		s.configure(t, map[string]any{"deny_web_identity": true})
		before, n := len(s.calls(t)), runs()
		mark := klogMark()
		creds, found := lookup(t, podD, image)
		calls := s.since(t, before)
		denied := bin.invocations(t)[runs()-1]
		kubeletSaid := strings.Join(errorLines(klogSince(mark)), "\n")
		t.Logf("STS denied: found=%t creds=%d stub calls %v\nexchange: %s\nkubelet said: %s", found, len(creds), calls,
			denied, kubeletSaid)
		// A pod whose role STS refuses gets nothing: not the node's credentials, not a cached answer.
		if found || len(creds) != 0 {
			t.Errorf("with its role refused the pod got %d credentials (found=%t); want none", len(creds), found)
		}
		if len(tokenCalls(calls)) != 0 {
			t.Errorf("ECR was called although STS refused the role: %v", tokenCalls(calls))
		}
		if denied.Exit != 3 || len(denied.Response) != 0 || !strings.Contains(string(denied.Stderr), "AssumeRoleWithWebIdentity") {
			t.Errorf("plugin run with the role refused: want exit 3, no stdout, a stderr line naming AssumeRoleWithWebIdentity; got %s", denied)
		}
		if !strings.Contains(kubeletSaid, "AssumeRoleWithWebIdentity") {
			t.Errorf("the kubelet did not log the plugin's reason; it said: %s", kubeletSaid)
		}
		s.configure(t, map[string]any{"deny_web_identity": false})
		before = len(s.calls(t))
		creds, found = lookup(t, podD, image)
		if !found || len(creds) != 1 {
			t.Fatalf("after STS recovered the kubelet returned found=%t (%d creds): the failure was cached; exchange %s",
				found, len(creds), bin.invocations(t)[runs()-1])
		}
		if runs() != n+2 {
			t.Errorf("plugin ran %d times across denial and recovery, want 2", runs()-n)
		}
		c := expectIssued(t, image, creds[0], s.since(t, before), "ecr", "us-east-1")
		if !strings.HasPrefix(c.AccessKeyID, "ASIA") {
			t.Errorf("after recovery ECR was called with %q, want the assumed role's key", c.AccessKeyID)
		}
	})

	for _, inv := range bin.invocations(t) {
		for _, tok := range api.issuedTokens {
			if strings.Contains(string(inv.Stderr), tok) || strings.Contains(string(inv.Response), tok) {
				t.Errorf("the plugin echoed the service account token:\n%s", inv)
			}
		}
	}
}

func toJSON(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}

// TestPodIdentity: the shipped examples/credentialproviders/pod-identity.yaml,
// read by the kubelet as is (its env names the cluster; the AWS settings come
// from the kubelet's environment). The kubelet mints a token of audience
// pods.eks.amazonaws.com; the plugin exchanges it with the stub's eks-auth
// (AssumeRoleForPodIdentity, signed with the node key) and calls ECR with the
// associated role's key. A service account without an association gets the
// node's credentials, an annotation (when the config passes it) wins, and a
// refused exchange is exit 3 that the kubelet logs and does not cache.
func TestPodIdentity(t *testing.T) {
	if !isolated(t) {
		return
	}
	sanitizeEnv(t)
	setFeatureGate(t, features.KubeletServiceAccountTokenForCredentialProviders, true)
	s := startStub(t)
	const audience = "pods.eks.amazonaws.com"
	const cluster = "my-cluster" // the example's placeholder
	const nodeKey = "AKIAEXAMPLENODEKEY01"
	roleA := "arn:aws:iam::210987654321:role/team-a-pull"
	roleB := "arn:aws:iam::210987654321:role/team-b-pull"
	s.configure(t, map[string]any{"pod_identity_associations": map[string]any{cluster: map[string]string{
		"team-a/puller": roleA, "team-b/puller": roleB}}})
	for k, v := range s.awsEnv(t.TempDir()) {
		os.Setenv(k, v) // the kubelet's environment, which it passes to the plugin
	}
	os.Setenv("AWS_ENDPOINT_URL_EKS_AUTH", s.URL)

	api := &fakeAPI{issuer: "https://oidc.eks.us-east-1.amazonaws.com/id/PODIDENTITY", serviceAccounts: map[string]*corev1ServiceAccount{}}
	api.serviceAccounts["team-a/puller"] = newSA("team-a", "puller", "uid-sa-a", nil)
	api.serviceAccounts["team-b/puller"] = newSA("team-b", "puller", "uid-sa-b", nil)
	api.serviceAccounts["team-c/plain"] = newSA("team-c", "plain", "uid-sa-c", nil)
	example := filepath.Join(repoRoot(t), "examples", "credentialproviders", "pod-identity.yaml")
	bin := newBinDir(t, providerName, true)
	register(t, example, bin.Dir, api)

	image := "210987654321.dkr.ecr.us-west-2.amazonaws.com/team/app:1"
	runs := func() int { return len(bin.invocations(t)) }
	exchanges := func(calls []stubCall) []stubCall {
		var out []stubCall
		for _, c := range calls {
			if c.Service == "eks-auth" && c.Action == "AssumeRoleForPodIdentity" {
				out = append(out, c)
			}
		}
		return out
	}

	t.Run("associated-sa-pulls-with-its-role", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"team-a", "web-1", "uid-pod-1", "puller"}, image)
		cred := singleCred(t, image, creds, found)
		calls := s.since(t, before)
		ex := exchanges(calls)
		if len(ex) != 1 {
			t.Fatalf("want one AssumeRoleForPodIdentity; stub calls %v\nexchange: %s", calls, bin.invocations(t)[runs()-1])
		}
		e := ex[0]
		if e.Status != 200 || e.AccessKeyID != nodeKey || e.Cluster != cluster || e.RoleArn != roleA || e.Region != "us-east-1" {
			t.Errorf("AssumeRoleForPodIdentity: status %d key %q cluster %q role %q region %s; want 200, the node key, %q, %q, the node's region us-east-1",
				e.Status, e.AccessKeyID, e.Cluster, e.RoleArn, e.Region, cluster, roleA)
		}
		if sub, _ := e.WebIdentity["sub"].(string); sub != "system:serviceaccount:team-a:puller" {
			t.Errorf("exchanged token sub %v", e.WebIdentity)
		}
		if aud := e.WebIdentity["aud"]; !strings.Contains(toJSON(aud), audience) {
			t.Errorf("exchanged token aud %v, want %s", aud, audience)
		}
		c := expectIssued(t, image, cred, calls, "ecr", "us-west-2")
		if c.AccessKeyID != e.IssuedAccessKeyID || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
			t.Errorf("ECR called with key %q, want the associated role's %q", c.AccessKeyID, e.IssuedAccessKeyID)
		}
		tr := api.tokenRequests[len(api.tokenRequests)-1]
		if len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != audience {
			t.Errorf("the kubelet requested audiences %v, want [%s]", tr.Spec.Audiences, audience)
		}
		var req map[string]any
		_ = json.Unmarshal(bin.invocations(t)[runs()-1].Request, &req)
		if req["serviceAccountToken"] != api.issuedTokens[len(api.issuedTokens)-1] {
			t.Errorf("request did not carry the minted token: %v", req)
		}
		if _, ok := req["serviceAccountAnnotations"]; ok && toJSON(req["serviceAccountAnnotations"]) != "{}" {
			t.Errorf("the example passes no annotations, got %v", req["serviceAccountAnnotations"])
		}
	})

	t.Run("same-sa-other-pod-is-cached", func(t *testing.T) {
		n := runs()
		creds, found := lookup(t, pod{"team-a", "web-2", "uid-pod-2", "puller"}, "210987654321.dkr.ecr.us-west-2.amazonaws.com/other")
		singleCred(t, "other", creds, found)
		if runs() != n {
			t.Errorf("plugin ran again for the same service account and registry (cacheType ServiceAccount)")
		}
	})

	t.Run("other-sa-other-role", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"team-b", "api-1", "uid-pod-3", "puller"}, image)
		cred := singleCred(t, image, creds, found)
		calls := s.since(t, before)
		ex := exchanges(calls)
		if len(ex) != 1 || ex[0].RoleArn != roleB {
			t.Fatalf("want one exchange for %s; calls %v", roleB, calls)
		}
		if c := expectIssued(t, image, cred, calls, "ecr", "us-west-2"); c.AccessKeyID != ex[0].IssuedAccessKeyID {
			t.Errorf("ECR called with %q, want team-b's %q", c.AccessKeyID, ex[0].IssuedAccessKeyID)
		}
	})

	t.Run("sa-without-association-uses-node", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"team-c", "job-1", "uid-pod-4", "plain"}, image)
		cred := singleCred(t, image, creds, found)
		calls := s.since(t, before)
		if ex := exchanges(calls); len(ex) != 1 || ex[0].Status != 404 {
			t.Errorf("want one AssumeRoleForPodIdentity answered 404; calls %v", calls)
		}
		if c := expectIssued(t, image, cred, calls, "ecr", "us-west-2"); c.AccessKeyID != nodeKey {
			t.Errorf("ECR called with %q, want the node key", c.AccessKeyID)
		}
	})

	t.Run("static-pod-without-sa-uses-node-without-exchange", func(t *testing.T) {
		before := len(s.calls(t))
		creds, found := lookup(t, pod{"kube-system", "static", "uid-static", ""}, "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app")
		cred := singleCred(t, "static", creds, found)
		calls := s.since(t, before)
		if c := expectIssued(t, "static", cred, calls, "ecr", "eu-west-1"); c.AccessKeyID != nodeKey {
			t.Errorf("ECR called with %q, want the node key", c.AccessKeyID)
		}
		if ex := exchanges(calls); len(ex) != 0 {
			t.Errorf("a request without a token made an exchange: %v", ex)
		}
	})

	t.Run("refused-exchange-is-logged-and-not-cached", func(t *testing.T) {
		s.configure(t, map[string]any{"pod_identity_associations": map[string]any{cluster: map[string]string{"team-d/puller": roleA}}})
		api.serviceAccounts["team-d/puller"] = newSA("team-d", "puller", "uid-sa-d", nil)
		podD := pod{"team-d", "web-1", "uid-pod-5", "puller"}
		s.configure(t, map[string]any{"deny_pod_identity": true})
		before, n := len(s.calls(t)), runs()
		mark := klogMark()
		creds, found := lookup(t, podD, image)
		calls := s.since(t, before)
		denied := bin.invocations(t)[runs()-1]
		kubeletSaid := strings.Join(errorLines(klogSince(mark)), "\n")
		if found || len(creds) != 0 {
			t.Errorf("with the exchange refused the pod got %d credentials (found=%t); want none", len(creds), found)
		}
		if len(tokenCalls(calls)) != 0 {
			t.Errorf("ECR was called although eks-auth refused: %v", tokenCalls(calls))
		}
		if denied.Exit != 3 || len(denied.Response) != 0 || !strings.Contains(string(denied.Stderr), "AssumeRoleForPodIdentity") {
			t.Errorf("plugin run with the exchange refused: want exit 3, no stdout, a stderr line naming AssumeRoleForPodIdentity; got %s", denied)
		}
		if !strings.Contains(kubeletSaid, "AssumeRoleForPodIdentity") {
			t.Errorf("the kubelet did not log the plugin's reason; it said: %s", kubeletSaid)
		}
		s.configure(t, map[string]any{"deny_pod_identity": false})
		creds, found = lookup(t, podD, image)
		if !found || len(creds) != 1 {
			t.Fatalf("after eks-auth recovered the kubelet returned found=%t (%d creds): the failure was cached", found, len(creds))
		}
		if runs() != n+2 {
			t.Errorf("plugin ran %d times across refusal and recovery, want 2", runs()-n)
		}
	})

	for _, inv := range bin.invocations(t) {
		for _, tok := range api.issuedTokens {
			if strings.Contains(string(inv.Stderr), tok) || strings.Contains(string(inv.Response), tok) {
				t.Errorf("the plugin echoed the service account token:\n%s", inv)
			}
		}
		if strings.Contains(string(inv.Stderr), "node-secret-key-do-not-log") {
			t.Errorf("the plugin printed the node's secret key:\n%s", inv)
		}
	}
}
