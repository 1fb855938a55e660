"""The swagger 2.0 document as the protobuf kube-apiserver serves at /openapi/v2 for Accept
`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`: a gnostic `openapi.v2.Document`.

kubectl asks for it when a kind is missing from the OpenAPI v3 index (a `kind: List` to apply)
and reads its definitions (properties, items, additionalProperties, $ref, type, format,
required, vendor extensions such as x-kubernetes-group-version-kind). The message types are the
part of gnostic's OpenAPIv2.proto the document uses, with its names and field numbers, built at
import from a FileDescriptorProto; a value of a vendor extension, default, enum or example is a
`NamedAny`/`Any` whose `yaml` holds the value's YAML text, as gnostic writes it."""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["ACCEPTED", "CONTENT_TYPE", "Document", "encode"]

# upstream answers with the dotted form (Go's mime parser rejects the `@` of the deprecated
# form) and accepts both in Accept
CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
ACCEPTED = (CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")

_PACKAGE = "openapi.v2"

# message -> [(field, number, type, repeated, oneof)]; type is a scalar name or a message name
_SCALARS = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
            "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
            "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64}
_PARAM_FIELDS = [("required", 1, "bool"), ("in", 2, "string"), ("description", 3, "string"),
                 ("name", 4, "string")]
_MESSAGES: dict[str, list[tuple]] = {
    "Any": [("yaml", 2, "string")],
    "NamedAny": [("name", 1, "string"), ("value", 2, "Any")],
    "Info": [("title", 1, "string"), ("version", 2, "string"), ("description", 3, "string"),
             ("vendor_extension", 7, "NamedAny", True)],
    "JsonReference": [("_ref", 1, "string"), ("description", 2, "string")],
    "AdditionalPropertiesItem": [("schema", 1, "Schema", False, "oneof"),
                                 ("boolean", 2, "bool", False, "oneof")],
    "TypeItem": [("value", 1, "string", True)],
    "ItemsItem": [("schema", 1, "Schema", True)],
    "Properties": [("additional_properties", 1, "NamedSchema", True)],
    "NamedSchema": [("name", 1, "string"), ("value", 2, "Schema")],
    "Definitions": [("additional_properties", 1, "NamedSchema", True)],
    "Schema": [("_ref", 1, "string"), ("format", 2, "string"), ("title", 3, "string"),
               ("description", 4, "string"), ("default", 5, "Any"),
               ("multiple_of", 6, "double"), ("maximum", 7, "double"),
               ("exclusive_maximum", 8, "bool"), ("minimum", 9, "double"),
               ("exclusive_minimum", 10, "bool"), ("max_length", 11, "int64"),
               ("min_length", 12, "int64"), ("pattern", 13, "string"),
               ("max_items", 14, "int64"), ("min_items", 15, "int64"),
               ("unique_items", 16, "bool"), ("max_properties", 17, "int64"),
               ("min_properties", 18, "int64"), ("required", 19, "string", True),
               ("enum", 20, "Any", True), ("additional_properties", 21, "AdditionalPropertiesItem"),
               ("type", 22, "TypeItem"), ("items", 23, "ItemsItem"),
               ("all_of", 24, "Schema", True), ("properties", 25, "Properties"),
               ("discriminator", 26, "string"), ("read_only", 27, "bool"),
               ("example", 30, "Any"), ("vendor_extension", 31, "NamedAny", True)],
    "BodyParameter": [("description", 1, "string"), ("name", 2, "string"), ("in", 3, "string"),
                      ("required", 4, "bool"), ("schema", 5, "Schema"),
                      ("vendor_extension", 6, "NamedAny", True)],
    "QueryParameterSubSchema": _PARAM_FIELDS + [("type", 6, "string"), ("format", 7, "string"),
                                                ("unique_items", 20, "bool"),
                                                ("vendor_extension", 23, "NamedAny", True)],
    "PathParameterSubSchema": _PARAM_FIELDS + [("type", 5, "string"), ("format", 6, "string"),
                                               ("unique_items", 19, "bool"),
                                               ("vendor_extension", 22, "NamedAny", True)],
    "NonBodyParameter": [("query_parameter_sub_schema", 3, "QueryParameterSubSchema", False,
                          "oneof"),
                         ("path_parameter_sub_schema", 4, "PathParameterSubSchema", False,
                          "oneof")],
    "Parameter": [("body_parameter", 1, "BodyParameter", False, "oneof"),
                  ("non_body_parameter", 2, "NonBodyParameter", False, "oneof")],
    "ParametersItem": [("parameter", 1, "Parameter", False, "oneof"),
                       ("json_reference", 2, "JsonReference", False, "oneof")],
    "Response": [("description", 1, "string"), ("schema", 2, "SchemaItem"),
                 ("vendor_extension", 5, "NamedAny", True)],
    "SchemaItem": [("schema", 1, "Schema", False, "oneof")],
    "ResponseValue": [("response", 1, "Response", False, "oneof"),
                      ("json_reference", 2, "JsonReference", False, "oneof")],
    "NamedResponseValue": [("name", 1, "string"), ("value", 2, "ResponseValue")],
    "Responses": [("response_code", 1, "NamedResponseValue", True),
                  ("vendor_extension", 2, "NamedAny", True)],
    "Operation": [("tags", 1, "string", True), ("summary", 2, "string"),
                  ("description", 3, "string"), ("operation_id", 5, "string"),
                  ("produces", 6, "string", True), ("consumes", 7, "string", True),
                  ("parameters", 8, "ParametersItem", True), ("responses", 9, "Responses"),
                  ("schemes", 10, "string", True), ("deprecated", 11, "bool"),
                  ("vendor_extension", 13, "NamedAny", True)],
    "PathItem": [("_ref", 1, "string"), ("get", 2, "Operation"), ("put", 3, "Operation"),
                 ("post", 4, "Operation"), ("delete", 5, "Operation"),
                 ("options", 6, "Operation"), ("head", 7, "Operation"),
                 ("patch", 8, "Operation"), ("parameters", 9, "ParametersItem", True),
                 ("vendor_extension", 10, "NamedAny", True)],
    "NamedPathItem": [("name", 1, "string"), ("value", 2, "PathItem")],
    "Paths": [("vendor_extension", 1, "NamedAny", True), ("path", 2, "NamedPathItem", True)],
    "StringArray": [("value", 1, "string", True)],
    "NamedStringArray": [("name", 1, "string"), ("value", 2, "StringArray")],
    "SecurityRequirement": [("additional_properties", 1, "NamedStringArray", True)],
    "ApiKeySecurity": [("type", 1, "string"), ("name", 2, "string"), ("in", 3, "string"),
                       ("description", 4, "string"), ("vendor_extension", 5, "NamedAny", True)],
    "SecurityDefinitionsItem": [("api_key_security", 2, "ApiKeySecurity", False, "oneof")],
    "NamedSecurityDefinitionsItem": [("name", 1, "string"),
                                     ("value", 2, "SecurityDefinitionsItem")],
    "SecurityDefinitions": [("additional_properties", 1, "NamedSecurityDefinitionsItem", True)],
    "Document": [("swagger", 1, "string"), ("info", 2, "Info"), ("paths", 8, "Paths"),
                 ("definitions", 9, "Definitions"),
                 ("security", 12, "SecurityRequirement", True),
                 ("security_definitions", 13, "SecurityDefinitions"),
                 ("vendor_extension", 16, "NamedAny", True)],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="k3py/openapiv2.proto", package=_PACKAGE,
                                            syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=name)
        for field, number, typ, *rest in fields:
            repeated = bool(rest and rest[0])
            f = msg.field.add(name=field, number=number, label=(
                descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL))
            if typ in _SCALARS:
                f.type = _SCALARS[typ]
            else:
                f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                f.type_name = f".{_PACKAGE}.{typ}"
            if len(rest) > 1:
                if not msg.oneof_decl:
                    msg.oneof_decl.add(name=rest[1])
                f.oneof_index = 0
    return fd


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file_descriptor())
_classes = {name: message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _MESSAGES}
Document = _classes["Document"]
_REPEATED = {(name, f[0]) for name, fields in _MESSAGES.items() for f in fields
             if len(f) > 3 and f[3]}

# swagger key -> proto field of the messages filled field by field
_SCHEMA_KEYS = {"$ref": "_ref", "multipleOf": "multiple_of", "exclusiveMaximum":
                "exclusive_maximum", "exclusiveMinimum": "exclusive_minimum",
                "maxLength": "max_length", "minLength": "min_length", "maxItems": "max_items",
                "minItems": "min_items", "uniqueItems": "unique_items",
                "maxProperties": "max_properties", "minProperties": "min_properties",
                "readOnly": "read_only", "operationId": "operation_id"}


def _any(msg: Any, value: Any) -> None:
    msg.yaml = yaml.safe_dump(value, default_flow_style=False, sort_keys=False)


def _extension(repeated: Any, name: str, value: Any) -> None:
    named = repeated.add(name=name)
    _any(named.value, value)


def _fill(msg: Any, node: dict, special: dict) -> None:
    """Set msg's fields from a swagger object: x-* keys become vendor extensions, keys in
    `special` are handled by their function, the rest map to fields of the same name."""
    fields = msg.DESCRIPTOR.fields_by_name
    for key, value in node.items():
        if key.startswith("x-"):
            if "vendor_extension" in fields:
                _extension(msg.vendor_extension, key, value)
            continue
        if key in special:
            special[key](msg, value)
            continue
        field = _SCHEMA_KEYS.get(key, key)
        if field not in fields:
            continue
        fd = fields[field]
        repeated = (msg.DESCRIPTOR.name, field) in _REPEATED
        if fd.message_type is not None and fd.message_type.name == "Any":
            if repeated:
                for v in value:
                    _any(getattr(msg, field).add(), v)
            else:
                _any(getattr(msg, field), value)
        elif repeated:
            getattr(msg, field).extend(value)
        else:
            setattr(msg, field, value)


def _schema(msg: Any, node: dict) -> None:
    _fill(msg, node, _SCHEMA_SPECIAL)


def _additional_properties(msg: Any, value: Any) -> None:
    if isinstance(value, bool):
        msg.additional_properties.boolean = value
    else:
        _schema(msg.additional_properties.schema, value)


def _type(msg: Any, value: Any) -> None:
    msg.type.value.extend([value] if isinstance(value, str) else value)


def _items(msg: Any, value: Any) -> None:
    for item in [value] if isinstance(value, dict) else value:
        _schema(msg.items.schema.add(), item)


def _properties(msg: Any, value: dict) -> None:
    for name, prop in value.items():
        _schema(msg.properties.additional_properties.add(name=name).value, prop)


def _all_of(msg: Any, value: list) -> None:
    for item in value:
        _schema(msg.all_of.add(), item)


_SCHEMA_SPECIAL = {"additionalProperties": _additional_properties, "type": _type,
                   "items": _items, "properties": _properties, "allOf": _all_of}


def _parameter(item: Any, node: dict) -> None:
    if "$ref" in node:
        item.json_reference._ref = node["$ref"]
        return
    where = node.get("in")
    if where == "body":
        _fill(item.parameter.body_parameter, node, {"schema": lambda m, v: _schema(m.schema, v)})
    elif where == "path":
        _fill(item.parameter.non_body_parameter.path_parameter_sub_schema, node, {})
    else:
        _fill(item.parameter.non_body_parameter.query_parameter_sub_schema, node, {})


def _parameters(msg: Any, value: list) -> None:
    for node in value:
        _parameter(msg.parameters.add(), node)


def _responses(msg: Any, value: dict) -> None:
    for code, node in value.items():
        resp = msg.responses.response_code.add(name=code).value.response
        _fill(resp, node, {"schema": lambda m, v: _schema(m.schema.schema, v)})


_OPERATION_SPECIAL = {"parameters": _parameters, "responses": _responses}


def _path_item(msg: Any, node: dict) -> None:
    for key, value in node.items():
        if key == "parameters":
            _parameters(msg, value)
        elif key.startswith("x-"):
            _extension(msg.vendor_extension, key, value)
        elif key in msg.DESCRIPTOR.fields_by_name:
            _fill(getattr(msg, key), value, _OPERATION_SPECIAL)


def encode(doc: dict) -> bytes:
    """The serialized `openapi.v2.Document` of a swagger 2.0 document (a dict)."""
    out = Document(swagger=doc.get("swagger", "2.0"))
    _fill(out.info, doc.get("info", {}), {})
    for name, item in doc.get("paths", {}).items():
        _path_item(out.paths.path.add(name=name).value, item)
    for name, schema in doc.get("definitions", {}).items():
        _schema(out.definitions.additional_properties.add(name=name).value, schema)
    for name, sec in doc.get("securityDefinitions", {}).items():
        item = out.security_definitions.additional_properties.add(name=name).value
        _fill(item.api_key_security, sec, {})
    for requirement in doc.get("security", []):
        req = out.security.add()
        for name, scopes in requirement.items():
            req.additional_properties.add(name=name).value.value.extend(scopes)
    return out.SerializeToString(deterministic=True)
