// validate decodes Kubernetes manifests strictly against the Kubernetes API
// types (k8s.io/api), as the API server's strict field validation would: an
// unknown, misspelt or wrongly cased field, a duplicate field, a wrong type or
// an unknown kind is an error. No network, no
// cluster, no schema download: the types are compiled in.
//
//	validate FILE...   prints one JSON line per object ({"kind":..,"object":..}),
//	                   exits 1 naming the file, document and error otherwise.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object returns an empty value of the API type for apiVersion and kind.
func object(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, nil
	}
	return nil, fmt.Errorf("unknown apiVersion/kind %s/%s", apiVersion, kind)
}

func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(data, []byte("\n---")) {
		if len(strings.TrimSpace(stripComments(string(d)))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func validate(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	docs := documents(data)
	if len(docs) == 0 {
		return fmt.Errorf("%s: no objects", path)
	}
	for i, doc := range docs {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return fmt.Errorf("%s: document %d: %v", path, i+1, err)
		}
		obj, err := object(head.APIVersion, head.Kind)
		if err != nil {
			return fmt.Errorf("%s: document %d: %v", path, i+1, err)
		}
		// YAML to JSON, then the API server's own decoding rules: field
		// names match exactly (case too), unknown and duplicate fields are
		// errors (sigs.k8s.io/json, what apimachinery's strict decoding uses).
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return fmt.Errorf("%s: document %d (%s): %v", path, i+1, head.Kind, err)
		}
		strict, err := kjson.UnmarshalStrict(js, obj)
		if err != nil {
			return fmt.Errorf("%s: document %d (%s): %v", path, i+1, head.Kind, err)
		}
		if len(strict) > 0 {
			return fmt.Errorf("%s: document %d (%s): %v", path, i+1, head.Kind, strict)
		}
		line, err := json.Marshal(map[string]any{"kind": head.Kind, "object": obj})
		if err != nil {
			return err
		}
		fmt.Println(string(line))
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := validate(path); err != nil {
			fmt.Fprintln(os.Stderr, "validate:", err)
			os.Exit(1)
		}
	}
}
