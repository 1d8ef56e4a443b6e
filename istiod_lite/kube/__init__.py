"""istiod_lite on Kubernetes.

``api`` (the one door to the API server, limited to the verbs ``rbac_usage`` declares), ``store`` + ``cache``
(list + watch per kind, re-list on 410) with ``inventory`` and ``views`` (what translation and the server
take), ``tokenreview`` (CA authentication of ztunnels), ``waypoint_objects`` + ``waypoint_controller``,
``root_cert`` (the istio-ca-root-cert ConfigMap), ``enrollment`` + ``node_enrollment`` (the node agent's
Kubernetes side), ``cluster_ops`` (meshctl's writes to a cluster), ``install_values`` + ``manifests``
(everything ``deploy/`` holds and ``meshctl install`` renders).
"""
