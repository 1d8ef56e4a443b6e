"""The contract: typed user resources and pushed discovery resources, YAML loading and validation.

User resources (what people write):

* ``schemas.networking`` — VirtualService, DestinationRule (networking.istio.io v1/v1beta1/v1alpha3)
* ``schemas.security`` — AuthorizationPolicy, PeerAuthentication (security.istio.io v1/v1beta1)
* ``schemas.gateway`` — Gateway, HTTPRoute (gateway.networking.k8s.io v1/v1beta1)
* ``schemas.core`` — Namespace, Service, ServiceAccount (v1) and Deployment (apps/v1)
* ``schemas.common`` — ObjectMeta, Duration, Percent, field metadata
* ``schemas.kinds`` — the registry: ``KINDS[(group, kind)]`` → class, versions, rules; ``Resource``
* ``schemas.converter`` — the one cattrs converter (``structure``/``unstructure``)
* ``schemas.load`` — ``load_paths``/``load_text`` → ``LoadResult``; ``parse_resource`` for one object
* ``schemas.dump`` — ``dump_yaml``; ``schemas.crds`` — ``python -m schemas.crds OUTDIR``

Pushed resources (what istiod_lite sends to proxies) live in ``schemas.discovery``.
"""
