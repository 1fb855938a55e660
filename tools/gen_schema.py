"""Dev-time generator of k3py/api/data/definitions.json.gz: OpenAPI v2 definitions for the built-in
kinds, built offline from the installed `kubernetes` Python client models plus upstream patch facts.

Run: `python tools/gen_schema.py` (writes the file; `--check SWAGGER` compares names with upstream)."""

from __future__ import annotations

import gzip
import inspect
import json
import re
import sys
from pathlib import Path

import kubernetes.client.api as client_api
import kubernetes.client.models as client_models

OUT = Path(__file__).resolve().parent.parent / "k3py" / "api" / "data" / "definitions.json.gz"

# API class -> (Go package of the group, API group name). Order = priority when a nested type
# is reachable from several groups at the same depth.
API_CLASSES: list[tuple[str, str, str]] = [
    ("CoreV1Api", "core", ""),
    ("AppsV1Api", "apps", "apps"),
    ("BatchV1Api", "batch", "batch"),
    ("AutoscalingV1Api", "autoscaling", "autoscaling"),
    ("AutoscalingV2Api", "autoscaling", "autoscaling"),
    ("NetworkingV1Api", "networking", "networking.k8s.io"),
    ("StorageV1Api", "storage", "storage.k8s.io"),
    ("CoordinationV1Api", "coordination", "coordination.k8s.io"),
    ("EventsV1Api", "events", "events.k8s.io"),
    ("DiscoveryV1Api", "discovery", "discovery.k8s.io"),
    ("PolicyV1Api", "policy", "policy"),
    ("RbacAuthorizationV1Api", "rbac", "rbac.authorization.k8s.io"),
    ("SchedulingV1Api", "scheduling", "scheduling.k8s.io"),
    ("NodeV1Api", "node", "node.k8s.io"),
    ("AdmissionregistrationV1Api", "admissionregistration", "admissionregistration.k8s.io"),
    ("ApiextensionsV1Api", "apiextensions", "apiextensions.k8s.io"),
    ("AuthenticationV1Api", "authentication", "authentication.k8s.io"),
    ("AuthorizationV1Api", "authorization", "authorization.k8s.io"),
    ("CertificatesV1Api", "certificates", "certificates.k8s.io"),
]

# Class-name prefixes the client uses when two groups define the same type name.
PREFIXES = {
    "Core": "core", "Apps": "apps", "Batch": "batch", "Autoscaling": "autoscaling",
    "Networking": "networking", "Storage": "storage", "Coordination": "coordination",
    "Events": "events", "Discovery": "discovery", "Policy": "policy",
    "RbacAuthorization": "rbac", "Rbac": "rbac", "Scheduling": "scheduling", "Node": "node",
    "Admissionregistration": "admissionregistration", "Apiextensions": "apiextensions",
    "Authentication": "authentication", "Authorization": "authorization",
    "Certificates": "certificates",
}

META_TYPES = {
    "V1ObjectMeta", "V1ListMeta", "V1LabelSelector", "V1LabelSelectorRequirement",
    "V1OwnerReference", "V1ManagedFieldsEntry", "V1Condition", "V1Status", "V1StatusDetails",
    "V1StatusCause", "V1DeleteOptions", "V1Preconditions", "V1APIResource", "V1APIResourceList",
    "V1APIGroup", "V1APIGroupList", "V1APIVersions", "V1GroupVersionForDiscovery",
    "V1ServerAddressByClientCIDR", "V1WatchEvent", "V1FieldSelectorRequirement",
}

# Types served through another group's API (subresources) or only used by another group.
OVERRIDES = {
    "V1Eviction": "policy", "V1Scale": "autoscaling", "V1ScaleSpec": "autoscaling",
    "V1ScaleStatus": "autoscaling", "V1TopologySelectorTerm": "core",
    "V1TopologySelectorLabelRequirement": "core",
}

PACKAGE_PREFIX = {
    "meta": "io.k8s.apimachinery.pkg.apis.meta",
    "apiextensions": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
}

# Fields the client models flatten (int-or-string, quantities, raw objects), definition-level
# map types and the patch/list metadata, as published in upstream's api/openapi-spec/swagger.json.
# Line format: `<def>.<field> p=<patch-strategy>/<merge-key> l=<list-type>/<map-keys> m=<map-type>
# t=<special type>`, or `<def> =<map-type>`; `meta.` = io.k8s.apimachinery.pkg.apis.meta.v1.
FACTS = """
admissionregistration.v1.MatchResources =atomic
admissionregistration.v1.NamedRuleWithOperations =atomic
admissionregistration.v1.ParamKind =atomic
admissionregistration.v1.ParamRef =atomic
admissionregistration.v1.Variable =atomic
autoscaling.v1.CrossVersionObjectReference =atomic
core.v1.ConfigMapKeySelector =atomic
core.v1.EndpointAddress =atomic
core.v1.EndpointPort =atomic
core.v1.FileKeySelector =atomic
core.v1.LocalObjectReference =atomic
core.v1.NodeSelector =atomic
core.v1.NodeSelectorTerm =atomic
core.v1.ObjectFieldSelector =atomic
core.v1.ObjectReference =atomic
core.v1.ResourceFieldSelector =atomic
core.v1.ScopeSelector =atomic
core.v1.SecretKeySelector =atomic
core.v1.SecretReference =atomic
core.v1.TopologySelectorTerm =atomic
core.v1.TypedLocalObjectReference =atomic
discovery.v1.EndpointPort =atomic
networking.v1.ServiceBackendPort =atomic
rbac.v1.RoleRef =atomic
rbac.v1.Subject =atomic
meta.LabelSelector =atomic
meta.OwnerReference =atomic
admissionregistration.v1.MatchResources.excludeResourceRules l=atomic/
admissionregistration.v1.MatchResources.resourceRules l=atomic/
admissionregistration.v1.MutatingAdmissionPolicySpec.matchConditions p=merge/name l=map/name
admissionregistration.v1.MutatingAdmissionPolicySpec.mutations l=atomic/
admissionregistration.v1.MutatingAdmissionPolicySpec.variables l=atomic/
admissionregistration.v1.MutatingWebhook.admissionReviewVersions l=atomic/
admissionregistration.v1.MutatingWebhook.matchConditions p=merge/name l=map/name
admissionregistration.v1.MutatingWebhook.rules l=atomic/
admissionregistration.v1.MutatingWebhookConfiguration.webhooks p=merge/name l=map/name
admissionregistration.v1.NamedRuleWithOperations.apiGroups l=atomic/
admissionregistration.v1.NamedRuleWithOperations.apiVersions l=atomic/
admissionregistration.v1.NamedRuleWithOperations.operations l=atomic/
admissionregistration.v1.NamedRuleWithOperations.resourceNames l=atomic/
admissionregistration.v1.NamedRuleWithOperations.resources l=atomic/
admissionregistration.v1.RuleWithOperations.apiGroups l=atomic/
admissionregistration.v1.RuleWithOperations.apiVersions l=atomic/
admissionregistration.v1.RuleWithOperations.operations l=atomic/
admissionregistration.v1.RuleWithOperations.resources l=atomic/
admissionregistration.v1.TypeChecking.expressionWarnings l=atomic/
admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec.validationActions l=set/
admissionregistration.v1.ValidatingAdmissionPolicySpec.auditAnnotations l=atomic/
admissionregistration.v1.ValidatingAdmissionPolicySpec.matchConditions p=merge/name l=map/name
admissionregistration.v1.ValidatingAdmissionPolicySpec.validations l=atomic/
admissionregistration.v1.ValidatingAdmissionPolicySpec.variables p=merge/name l=map/name
admissionregistration.v1.ValidatingAdmissionPolicyStatus.conditions l=map/type
admissionregistration.v1.ValidatingWebhook.admissionReviewVersions l=atomic/
admissionregistration.v1.ValidatingWebhook.matchConditions p=merge/name l=map/name
admissionregistration.v1.ValidatingWebhook.rules l=atomic/
admissionregistration.v1.ValidatingWebhookConfiguration.webhooks p=merge/name l=map/name
apps.v1.ControllerRevision.data t=RawExtension
apps.v1.DaemonSetStatus.conditions p=merge/type l=map/type
apps.v1.DeploymentSpec.strategy p=retainKeys/
apps.v1.DeploymentStatus.conditions p=merge/type l=map/type
apps.v1.ReplicaSetStatus.conditions p=merge/type l=map/type
apps.v1.RollingUpdateDaemonSet.maxSurge t=IntOrString
apps.v1.RollingUpdateDaemonSet.maxUnavailable t=IntOrString
apps.v1.RollingUpdateDeployment.maxSurge t=IntOrString
apps.v1.RollingUpdateDeployment.maxUnavailable t=IntOrString
apps.v1.RollingUpdateStatefulSetStrategy.maxUnavailable t=IntOrString
apps.v1.StatefulSetSpec.volumeClaimTemplates l=atomic/
apps.v1.StatefulSetStatus.conditions p=merge/type l=map/type
authentication.v1.TokenRequestSpec.audiences l=atomic/
authentication.v1.TokenReviewSpec.audiences l=atomic/
authentication.v1.TokenReviewStatus.audiences l=atomic/
authentication.v1.UserInfo.groups l=atomic/
authorization.v1.FieldSelectorAttributes.requirements l=atomic/
authorization.v1.LabelSelectorAttributes.requirements l=atomic/
authorization.v1.NonResourceRule.nonResourceURLs l=atomic/
authorization.v1.NonResourceRule.verbs l=atomic/
authorization.v1.ResourceRule.apiGroups l=atomic/
authorization.v1.ResourceRule.resourceNames l=atomic/
authorization.v1.ResourceRule.resources l=atomic/
authorization.v1.ResourceRule.verbs l=atomic/
authorization.v1.SubjectAccessReviewSpec.groups l=atomic/
authorization.v1.SubjectRulesReviewStatus.nonResourceRules l=atomic/
authorization.v1.SubjectRulesReviewStatus.resourceRules l=atomic/
autoscaling.v2.HPAScalingRules.policies l=atomic/
autoscaling.v2.HPAScalingRules.tolerance t=Quantity
autoscaling.v2.HorizontalPodAutoscalerSpec.metrics l=atomic/
autoscaling.v2.HorizontalPodAutoscalerStatus.conditions p=merge/type l=map/type
autoscaling.v2.HorizontalPodAutoscalerStatus.currentMetrics l=atomic/
autoscaling.v2.MetricTarget.averageValue t=Quantity
autoscaling.v2.MetricTarget.value t=Quantity
autoscaling.v2.MetricValueStatus.averageValue t=Quantity
autoscaling.v2.MetricValueStatus.value t=Quantity
batch.v1.CronJobStatus.active l=atomic/
batch.v1.JobStatus.conditions p=merge/type l=atomic/
batch.v1.PodFailurePolicy.rules l=atomic/
batch.v1.PodFailurePolicyOnExitCodesRequirement.values l=set/
batch.v1.PodFailurePolicyRule.onPodConditions l=atomic/
batch.v1.SuccessPolicy.rules l=atomic/
batch.v1.UncountedTerminatedPods.failed l=set/
batch.v1.UncountedTerminatedPods.succeeded l=set/
certificates.v1.CertificateSigningRequestSpec.groups l=atomic/
certificates.v1.CertificateSigningRequestSpec.usages l=atomic/
certificates.v1.CertificateSigningRequestStatus.conditions l=map/type
coordination.v1.LeaseSpec.acquireTime t=MicroTime
coordination.v1.LeaseSpec.renewTime t=MicroTime
core.v1.Capabilities.add l=atomic/
core.v1.Capabilities.drop l=atomic/
core.v1.CephFSPersistentVolumeSource.monitors l=atomic/
core.v1.CephFSVolumeSource.monitors l=atomic/
core.v1.ComponentStatus.conditions p=merge/type l=map/type
core.v1.ConfigMapProjection.items l=atomic/
core.v1.ConfigMapVolumeSource.items l=atomic/
core.v1.Container.args l=atomic/
core.v1.Container.command l=atomic/
core.v1.Container.env p=merge/name l=map/name
core.v1.Container.envFrom l=atomic/
core.v1.Container.ports p=merge/containerPort l=map/containerPort,protocol
core.v1.Container.resizePolicy l=atomic/
core.v1.Container.restartPolicyRules l=atomic/
core.v1.Container.volumeDevices p=merge/devicePath l=map/devicePath
core.v1.Container.volumeMounts p=merge/mountPath l=map/mountPath
core.v1.ContainerImage.names l=atomic/
core.v1.ContainerRestartRuleOnExitCodes.values l=set/
core.v1.ContainerStatus.allocatedResources t=Quantity
core.v1.ContainerStatus.allocatedResourcesStatus p=merge/name l=map/name
core.v1.ContainerStatus.volumeMounts p=merge/mountPath l=map/mountPath
core.v1.DownwardAPIProjection.items l=atomic/
core.v1.DownwardAPIVolumeSource.items l=atomic/
core.v1.EmptyDirVolumeSource.sizeLimit t=Quantity
core.v1.EndpointSubset.addresses l=atomic/
core.v1.EndpointSubset.notReadyAddresses l=atomic/
core.v1.EndpointSubset.ports l=atomic/
core.v1.Endpoints.subsets l=atomic/
core.v1.EphemeralContainer.args l=atomic/
core.v1.EphemeralContainer.command l=atomic/
core.v1.EphemeralContainer.env p=merge/name l=map/name
core.v1.EphemeralContainer.envFrom l=atomic/
core.v1.EphemeralContainer.ports p=merge/containerPort l=map/containerPort,protocol
core.v1.EphemeralContainer.resizePolicy l=atomic/
core.v1.EphemeralContainer.restartPolicyRules l=atomic/
core.v1.EphemeralContainer.volumeDevices p=merge/devicePath l=map/devicePath
core.v1.EphemeralContainer.volumeMounts p=merge/mountPath l=map/mountPath
core.v1.Event.eventTime t=MicroTime
core.v1.EventSeries.lastObservedTime t=MicroTime
core.v1.ExecAction.command l=atomic/
core.v1.FCVolumeSource.targetWWNs l=atomic/
core.v1.FCVolumeSource.wwids l=atomic/
core.v1.HTTPGetAction.httpHeaders l=atomic/
core.v1.HTTPGetAction.port t=IntOrString
core.v1.HostAlias.hostnames l=atomic/
core.v1.ISCSIPersistentVolumeSource.portals l=atomic/
core.v1.ISCSIVolumeSource.portals l=atomic/
core.v1.LimitRangeItem.default t=Quantity
core.v1.LimitRangeItem.defaultRequest t=Quantity
core.v1.LimitRangeItem.max t=Quantity
core.v1.LimitRangeItem.maxLimitRequestRatio t=Quantity
core.v1.LimitRangeItem.min t=Quantity
core.v1.LimitRangeSpec.limits l=atomic/
core.v1.LinuxContainerUser.supplementalGroups l=atomic/
core.v1.LoadBalancerIngress.ports l=atomic/
core.v1.LoadBalancerStatus.ingress l=atomic/
core.v1.NamespaceSpec.finalizers l=atomic/
core.v1.NamespaceStatus.conditions p=merge/type l=map/type
core.v1.NodeAffinity.preferredDuringSchedulingIgnoredDuringExecution l=atomic/
core.v1.NodeAllocatableResourceClaimStatus.containers l=set/
core.v1.NodeAllocatableResourceClaimStatus.resources t=Quantity
core.v1.NodeSelector.nodeSelectorTerms l=atomic/
core.v1.NodeSelectorRequirement.values l=atomic/
core.v1.NodeSelectorTerm.matchExpressions l=atomic/
core.v1.NodeSelectorTerm.matchFields l=atomic/
core.v1.NodeSpec.podCIDRs p=merge/ l=set/
core.v1.NodeSpec.taints l=atomic/
core.v1.NodeStatus.addresses p=merge/type l=map/type
core.v1.NodeStatus.allocatable t=Quantity
core.v1.NodeStatus.capacity t=Quantity
core.v1.NodeStatus.conditions p=merge/type l=map/type
core.v1.NodeStatus.declaredFeatures l=atomic/
core.v1.NodeStatus.images l=atomic/
core.v1.NodeStatus.runtimeHandlers l=atomic/
core.v1.NodeStatus.volumesAttached l=atomic/
core.v1.NodeStatus.volumesInUse l=atomic/
core.v1.PersistentVolumeClaimSpec.accessModes l=atomic/
core.v1.PersistentVolumeClaimStatus.accessModes l=atomic/
core.v1.PersistentVolumeClaimStatus.allocatedResourceStatuses m=granular
core.v1.PersistentVolumeClaimStatus.allocatedResources t=Quantity
core.v1.PersistentVolumeClaimStatus.capacity t=Quantity
core.v1.PersistentVolumeClaimStatus.conditions p=merge/type l=map/type
core.v1.PersistentVolumeSpec.accessModes l=atomic/
core.v1.PersistentVolumeSpec.capacity t=Quantity
core.v1.PersistentVolumeSpec.claimRef m=granular
core.v1.PersistentVolumeSpec.mountOptions l=atomic/
core.v1.PodAffinity.preferredDuringSchedulingIgnoredDuringExecution l=atomic/
core.v1.PodAffinity.requiredDuringSchedulingIgnoredDuringExecution l=atomic/
core.v1.PodAffinityTerm.matchLabelKeys l=atomic/
core.v1.PodAffinityTerm.mismatchLabelKeys l=atomic/
core.v1.PodAffinityTerm.namespaces l=atomic/
core.v1.PodAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution l=atomic/
core.v1.PodAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution l=atomic/
core.v1.PodDNSConfig.nameservers l=atomic/
core.v1.PodDNSConfig.options l=atomic/
core.v1.PodDNSConfig.searches l=atomic/
core.v1.PodExtendedResourceClaimStatus.requestMappings l=atomic/
core.v1.PodSecurityContext.supplementalGroups l=atomic/
core.v1.PodSecurityContext.sysctls l=atomic/
core.v1.PodSpec.containers p=merge/name l=map/name
core.v1.PodSpec.ephemeralContainers p=merge/name l=map/name
core.v1.PodSpec.hostAliases p=merge/ip l=map/ip
core.v1.PodSpec.imagePullSecrets p=merge/name l=map/name
core.v1.PodSpec.initContainers p=merge/name l=map/name
core.v1.PodSpec.nodeSelector m=atomic
core.v1.PodSpec.overhead t=Quantity
core.v1.PodSpec.readinessGates l=atomic/
core.v1.PodSpec.resourceClaims p=merge,retainKeys/name l=map/name
core.v1.PodSpec.schedulingGates p=merge/name l=map/name
core.v1.PodSpec.tolerations l=atomic/
core.v1.PodSpec.topologySpreadConstraints p=merge/topologyKey l=map/topologyKey,whenUnsatisfiable
core.v1.PodSpec.volumes p=merge,retainKeys/name l=map/name
core.v1.PodStatus.allocatedResources t=Quantity
core.v1.PodStatus.conditions p=merge/type l=map/type
core.v1.PodStatus.containerStatuses l=atomic/
core.v1.PodStatus.ephemeralContainerStatuses l=atomic/
core.v1.PodStatus.hostIPs p=merge/ip l=atomic/
core.v1.PodStatus.initContainerStatuses l=atomic/
core.v1.PodStatus.nodeAllocatableResourceClaimStatuses l=atomic/
core.v1.PodStatus.podIPs p=merge/ip l=map/ip
core.v1.PodStatus.resourceClaimStatuses p=merge,retainKeys/name l=map/name
core.v1.ProjectedVolumeSource.sources l=atomic/
core.v1.RBDPersistentVolumeSource.monitors l=atomic/
core.v1.RBDVolumeSource.monitors l=atomic/
core.v1.ReplicationControllerSpec.selector m=atomic
core.v1.ReplicationControllerStatus.conditions p=merge/type l=map/type
core.v1.ResourceFieldSelector.divisor t=Quantity
core.v1.ResourceQuotaSpec.hard t=Quantity
core.v1.ResourceQuotaSpec.scopes l=atomic/
core.v1.ResourceQuotaStatus.hard t=Quantity
core.v1.ResourceQuotaStatus.used t=Quantity
core.v1.ResourceRequirements.claims l=map/name
core.v1.ResourceRequirements.limits t=Quantity
core.v1.ResourceRequirements.requests t=Quantity
core.v1.ResourceStatus.resources l=map/resourceID
core.v1.ScopeSelector.matchExpressions l=atomic/
core.v1.ScopedResourceSelectorRequirement.values l=atomic/
core.v1.SecretProjection.items l=atomic/
core.v1.SecretVolumeSource.items l=atomic/
core.v1.ServiceAccount.imagePullSecrets l=atomic/
core.v1.ServiceAccount.secrets p=merge/name l=map/name
core.v1.ServicePort.targetPort t=IntOrString
core.v1.ServiceSpec.clusterIPs l=atomic/
core.v1.ServiceSpec.externalIPs l=atomic/
core.v1.ServiceSpec.ipFamilies l=atomic/
core.v1.ServiceSpec.loadBalancerSourceRanges l=atomic/
core.v1.ServiceSpec.ports p=merge/port l=map/port,protocol
core.v1.ServiceSpec.selector m=atomic
core.v1.ServiceStatus.conditions p=merge/type l=map/type
core.v1.TCPSocketAction.port t=IntOrString
core.v1.TopologySelectorLabelRequirement.values l=atomic/
core.v1.TopologySelectorTerm.matchLabelExpressions l=atomic/
core.v1.TopologySpreadConstraint.matchLabelKeys l=atomic/
core.v1.VolumeResourceRequirements.limits t=Quantity
core.v1.VolumeResourceRequirements.requests t=Quantity
discovery.v1.Endpoint.addresses l=set/
discovery.v1.EndpointHints.forNodes l=atomic/
discovery.v1.EndpointHints.forZones l=atomic/
discovery.v1.EndpointSlice.endpoints l=atomic/
discovery.v1.EndpointSlice.ports l=atomic/
events.v1.Event.eventTime t=MicroTime
events.v1.EventSeries.lastObservedTime t=MicroTime
networking.v1.HTTPIngressRuleValue.paths l=atomic/
networking.v1.IPBlock.except l=atomic/
networking.v1.IngressLoadBalancerIngress.ports l=atomic/
networking.v1.IngressLoadBalancerStatus.ingress l=atomic/
networking.v1.IngressSpec.rules l=atomic/
networking.v1.IngressSpec.tls l=atomic/
networking.v1.IngressTLS.hosts l=atomic/
networking.v1.NetworkPolicyEgressRule.ports l=atomic/
networking.v1.NetworkPolicyEgressRule.to l=atomic/
networking.v1.NetworkPolicyIngressRule.from l=atomic/
networking.v1.NetworkPolicyIngressRule.ports l=atomic/
networking.v1.NetworkPolicyPort.port t=IntOrString
networking.v1.NetworkPolicySpec.egress l=atomic/
networking.v1.NetworkPolicySpec.ingress l=atomic/
networking.v1.NetworkPolicySpec.policyTypes l=atomic/
networking.v1.ServiceCIDRSpec.cidrs l=atomic/
networking.v1.ServiceCIDRStatus.conditions p=merge/type l=map/type
node.v1.Overhead.podFixed t=Quantity
node.v1.Scheduling.nodeSelector m=atomic
node.v1.Scheduling.tolerations l=atomic/
policy.v1.PodDisruptionBudgetSpec.maxUnavailable t=IntOrString
policy.v1.PodDisruptionBudgetSpec.minAvailable t=IntOrString
policy.v1.PodDisruptionBudgetSpec.selector p=replace/
policy.v1.PodDisruptionBudgetStatus.conditions p=merge/type l=map/type
rbac.v1.AggregationRule.clusterRoleSelectors l=atomic/
rbac.v1.ClusterRole.rules l=atomic/
rbac.v1.ClusterRoleBinding.subjects l=atomic/
rbac.v1.PolicyRule.apiGroups l=atomic/
rbac.v1.PolicyRule.nonResourceURLs l=atomic/
rbac.v1.PolicyRule.resourceNames l=atomic/
rbac.v1.PolicyRule.resources l=atomic/
rbac.v1.PolicyRule.verbs l=atomic/
rbac.v1.Role.rules l=atomic/
rbac.v1.RoleBinding.subjects l=atomic/
storage.v1.CSIDriverSpec.tokenRequests l=atomic/
storage.v1.CSIDriverSpec.volumeLifecycleModes l=set/
storage.v1.CSINodeDriver.topologyKeys l=atomic/
storage.v1.CSINodeSpec.drivers p=merge/name l=map/name
storage.v1.CSIStorageCapacity.capacity t=Quantity
storage.v1.CSIStorageCapacity.maximumVolumeSize t=Quantity
storage.v1.StorageClass.allowedTopologies l=atomic/
storage.v1.StorageClass.mountOptions l=atomic/
apiextensions.v1.CustomResourceDefinitionNames.categories l=atomic/
apiextensions.v1.CustomResourceDefinitionNames.shortNames l=atomic/
apiextensions.v1.CustomResourceDefinitionSpec.versions l=atomic/
apiextensions.v1.CustomResourceDefinitionStatus.conditions l=map/type
apiextensions.v1.CustomResourceDefinitionStatus.storedVersions l=atomic/
apiextensions.v1.CustomResourceDefinitionVersion.additionalPrinterColumns l=atomic/
apiextensions.v1.CustomResourceDefinitionVersion.selectableFields l=atomic/
apiextensions.v1.JSONSchemaProps.allOf l=atomic/
apiextensions.v1.JSONSchemaProps.anyOf l=atomic/
apiextensions.v1.JSONSchemaProps.default t=JSON
apiextensions.v1.JSONSchemaProps.enum l=atomic/ t=JSON
apiextensions.v1.JSONSchemaProps.example t=JSON
apiextensions.v1.JSONSchemaProps.oneOf l=atomic/
apiextensions.v1.JSONSchemaProps.required l=atomic/
apiextensions.v1.JSONSchemaProps.x-kubernetes-list-map-keys l=atomic/
apiextensions.v1.JSONSchemaProps.x-kubernetes-validations p=merge/rule l=map/rule
apiextensions.v1.WebhookConversion.conversionReviewVersions l=atomic/
meta.APIGroup.serverAddressByClientCIDRs l=atomic/
meta.APIGroup.versions l=atomic/
meta.APIGroupList.groups l=atomic/
meta.APIResource.categories l=atomic/
meta.APIResource.shortNames l=atomic/
meta.APIResourceList.resources l=atomic/
meta.APIVersions.serverAddressByClientCIDRs l=atomic/
meta.APIVersions.versions l=atomic/
meta.DeleteOptions.dryRun l=atomic/
meta.FieldSelectorRequirement.values l=atomic/
meta.LabelSelector.matchExpressions l=atomic/
meta.LabelSelectorRequirement.values l=atomic/
meta.ManagedFieldsEntry.fieldsV1 t=FieldsV1
meta.ObjectMeta.finalizers p=merge/ l=set/
meta.ObjectMeta.managedFields l=atomic/
meta.ObjectMeta.ownerReferences p=merge/uid l=map/uid
meta.StatusDetails.causes l=atomic/
meta.WatchEvent.object t=RawExtension
"""

SPECIAL_DEFS = {
    "IntOrString": ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", {
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in "
                       "JSON or YAML marshalling and unmarshalling, it produces or consumes the "
                       "inner type.  This allows you to have, for example, a JSON field that can "
                       "accept a name or number.",
        "type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": True}),
    "Quantity": ("io.k8s.apimachinery.pkg.api.resource.Quantity", {
        "description": "Quantity is a fixed-point representation of a number, serialized as a "
                       "string such as 100m, 1Gi or 2.",
        "type": "string"}),
    "RawExtension": ("io.k8s.apimachinery.pkg.runtime.RawExtension", {
        "description": "RawExtension is used to hold extensions in external versions.",
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    "JSON": ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON", {
        "description": "JSON represents any valid JSON value. These types are supported: bool, "
                       "int64, float64, string, []interface{}, map[string]interface{} and nil.",
        "x-kubernetes-preserve-unknown-fields": True}),
    "FieldsV1": ("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1", {
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON "
                       "format.", "type": "object"}),
    "Time": ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", {
        "description": "Time is a wrapper around time.Time which supports correct marshaling to "
                       "YAML and JSON.  Wrappers are provided for many of the factory methods "
                       "that the time package offers.",
        "type": "string", "format": "date-time"}),
    "MicroTime": ("io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime", {
        "description": "MicroTime is version of Time with microsecond level precision.",
        "type": "string", "format": "date-time"}),
}


def parse_facts() -> tuple[dict[str, str], dict[tuple[str, str], dict[str, str]]]:
    def_map_types: dict[str, str] = {}
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for line in FACTS.strip().splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("="):
            def_map_types[_long(name)] = rest[1:]
            continue
        dname, _, field = name.rpartition(".")
        fields[(_long(dname), field)] = dict(p.split("=", 1) for p in rest.split())
    return def_map_types, fields


def _long(short: str) -> str:
    if short.startswith("meta."):
        return "io.k8s.apimachinery.pkg.apis.meta.v1." + short[5:]
    if short.startswith("apiextensions."):
        return "io.k8s.apiextensions-apiserver.pkg.apis." + short
    return "io.k8s.api." + short


def _split_version(cls: str) -> tuple[str, str, str] | None:
    """(group package or "", version, type name) from a client class name."""
    for prefix, pkg in sorted(PREFIXES.items(), key=lambda kv: -len(kv[0])):
        m = re.fullmatch(prefix + r"(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)", cls)
        if m:
            return pkg, m.group(1).lower(), m.group(2)
    m = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)", cls)
    return ("", m.group(1).lower(), m.group(2)) if m else None


def _model_refs(type_str: str) -> list[str]:
    return [t for t in re.findall(r"[A-Za-z0-9_]+", type_str) if hasattr(client_models, t)
            and hasattr(getattr(client_models, t), "openapi_types")]


def assign_groups() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Client class -> group package; root class -> (API group, kind) for the GVK extension."""
    group_of: dict[str, str] = {}
    roots: dict[str, tuple[str, str]] = {}
    layer: list[tuple[str, str]] = []
    for api_cls, pkg, _api_group in API_CLASSES:
        cls = getattr(client_api, api_cls, None)
        if cls is None:
            continue
        src = inspect.getsource(inspect.getmodule(cls))
        for name in dict.fromkeys(re.findall(r"'20[01]': \"(\w+)\"", src)):
            split = _split_version(name)
            if not split or name in META_TYPES or not hasattr(client_models, name):
                continue
            layer.append((name, pkg))
            if "kind" in getattr(client_models, name).attribute_map.values():
                roots.setdefault(name, ("", split[2]))
    for name in META_TYPES:
        group_of[name] = "meta"
    group_of.update(OVERRIDES)
    while layer:
        nxt: list[tuple[str, str]] = []
        for name, pkg in layer:
            if name in group_of:
                continue
            split = _split_version(name)
            if not split or not re.fullmatch(r"v\d+", split[1]):
                continue  # alpha and beta types are not served
            group_of[name] = split[0] if split and split[0] else pkg
            for t in getattr(client_models, name).openapi_types.values():
                for ref in _model_refs(t):
                    if ref not in group_of:
                        nxt.append((ref, group_of[name]))
        layer = nxt
    api_group_of = {pkg: group for _, pkg, group in API_CLASSES}
    roots = {name: (api_group_of.get(group_of.get(name, ""), ""), kind)
             for name, (_, kind) in roots.items() if name in group_of}
    return group_of, roots


def definition_name(cls: str, group_of: dict[str, str]) -> str | None:
    split = _split_version(cls)
    if split is None or cls not in group_of:
        return None
    _, version, type_name = split
    pkg = group_of[cls]
    prefix = PACKAGE_PREFIX.get(pkg, f"io.k8s.api.{pkg}")
    return f"{prefix}.{version}.{type_name}"


def _description(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("Attributes:")[0].strip()


def build() -> dict[str, dict]:
    def_map_types, fields = parse_facts()
    group_of, roots = assign_groups()
    names = {c: definition_name(c, group_of) for c in group_of}
    defs: dict[str, dict] = {}
    used_special: set[str] = set()

    def prop_schema(type_str: str, fact: dict[str, str]) -> dict:
        special = fact.get("t")
        m = re.fullmatch(r"List\[(.+)\]", type_str)
        if m:
            return {"type": "array", "items": prop_schema(m.group(1), fact)}
        m = re.fullmatch(r"Dict\[str, (.+)\]", type_str)
        if m:
            return {"type": "object", "additionalProperties": prop_schema(m.group(1), fact)}
        if special and (type_str in ("object", "str", "datetime")):
            used_special.add(special)
            return {"$ref": f"#/definitions/{SPECIAL_DEFS[special][0]}"}
        if type_str == "datetime":
            used_special.add("Time")
            return {"$ref": f"#/definitions/{SPECIAL_DEFS['Time'][0]}"}
        simple = {"str": {"type": "string"}, "int": {"type": "integer", "format": "int64"},
                  "float": {"type": "number", "format": "double"}, "bool": {"type": "boolean"},
                  "bytearray": {"type": "string", "format": "byte"},
                  "object": {"type": "object"}}
        if type_str in simple:
            return dict(simple[type_str])
        if type_str in names and names[type_str]:
            return {"$ref": f"#/definitions/{names[type_str]}"}
        return {"type": "object"}

    for cls_name, def_name in names.items():
        if not def_name:
            continue
        cls = getattr(client_models, cls_name)
        props: dict[str, dict] = {}
        required: list[str] = []
        model_fields = getattr(cls, "model_fields", {})
        for attr, type_str in cls.openapi_types.items():
            json_name = cls.attribute_map[attr]
            fact = fields.get((def_name, json_name), {})
            schema = prop_schema(type_str, fact)
            info = model_fields.get(attr)
            if info is not None and info.description:
                schema["description"] = info.description
            if info is not None and info.is_required():
                required.append(json_name)
            if "p" in fact:
                strategy, _, key = fact["p"].partition("/")
                if strategy:
                    schema["x-kubernetes-patch-strategy"] = strategy
                if key:
                    schema["x-kubernetes-patch-merge-key"] = key
            if "l" in fact:
                list_type, _, keys = fact["l"].partition("/")
                schema["x-kubernetes-list-type"] = list_type
                if keys:
                    schema["x-kubernetes-list-map-keys"] = keys.split(",")
            if "m" in fact:
                schema["x-kubernetes-map-type"] = fact["m"]
            props[json_name] = schema
        body: dict = {"description": _description(cls), "type": "object",
                      "properties": dict(sorted(props.items()))}
        if required:
            body["required"] = sorted(required)
        if def_name in def_map_types:
            body["x-kubernetes-map-type"] = def_map_types[def_name]
        if cls_name in roots:
            api_group, kind = roots[cls_name]
            body["x-kubernetes-group-version-kind"] = [
                {"group": api_group, "kind": kind, "version": def_name.split(".")[-2]}]
        defs[def_name] = body
    for special in used_special | {"IntOrString", "Quantity", "Time"}:
        name, body = SPECIAL_DEFS[special]
        defs[name] = dict(body)
    return dict(sorted(defs.items()))


def check(swagger_path: str, defs: dict[str, dict]) -> int:
    """Dev aid: list definition names that differ from upstream's (in the groups we cover)."""
    upstream = json.loads(Path(swagger_path).read_text())["definitions"]
    bad = 0
    for name in sorted(defs):
        if name not in upstream:
            print("not upstream:", name)
            bad += 1
    covered = {n.rsplit(".", 2)[0] for n in defs}
    for name in sorted(upstream):
        if name.rsplit(".", 2)[0] in covered and re.search(r"\.v\d+\.[A-Z]\w*$", name) \
                and name not in defs:
            print("missing:", name)
            bad += 1
    for name, body in defs.items():
        want = upstream.get(name, {}).get("x-kubernetes-group-version-kind")
        got = body.get("x-kubernetes-group-version-kind")
        if got and want and got[0] not in want:
            print("gvk differs:", name, got, want)
            bad += 1
    return bad


def main(argv: list[str]) -> int:
    defs = build()
    if len(argv) > 2 and argv[1] == "--check":
        return 1 if check(argv[2], defs) else 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps({"definitions": defs}, sort_keys=True, separators=(",", ":")).encode()
    OUT.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{len(defs)} definitions, {len(raw)} bytes raw, {OUT.stat().st_size} gzip -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
