"""Query results on the wire: an :class:`xarray.Dataset` as JSON (small) or an Arrow IPC stream (large).

No pickle anywhere. Both forms carry every variable with its dimensions and dtype, so the client
rebuilds the same Dataset that :meth:`screening.store.reader.Results.query` returns on the server
(NaN travels as JSON ``null``).

JSON layout::

    {"attrs": {...}, "dims": {"perturbation": n, ...},
     "coords": {name: {"dims": [...], "dtype": "int64", "data": [...]}, ...},
     "data_vars": {name: {"dims": [...], "dtype": "float32", "data": [...]}, ...}}

Arrow layout: one row per perturbation; one column per variable along ``perturbation``
(variables with further dimensions, e.g. mutagenesis ``[position, base]``, as fixed-size lists);
the schema metadata ``screening`` holds the JSON above without the data, plus the values of
coordinates that are not along ``perturbation`` (e.g. ``base``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["ARROW_TYPE", "JSON_TYPE", "dataset_to_json", "dataset_from_json", "dataset_to_arrow", "dataset_from_arrow"]

ARROW_TYPE = "application/vnd.apache.arrow.stream"
JSON_TYPE = "application/json"
ROW_DIM = "perturbation"
_META_KEY = b"screening"
_VSTR = "StringDType()"  # numpy's variable-length strings: zarr 3 reads string arrays (e.g. labels) as these
_TEXT = "OUST"  # dtype kinds sent as text


def _dtype(name: str) -> np.dtype:
    """The dtype a wire description names (``str`` is handled by the callers)."""
    return np.dtypes.StringDType() if name == _VSTR else np.dtype(name)


def _strings(values: np.ndarray) -> list[str]:
    return values.tolist() if values.dtype.kind == "T" else values.astype(str).tolist()


def _json_values(values: np.ndarray) -> list:
    if values.dtype.kind == "f":
        as_object = values.astype(object)
        as_object[np.isnan(values)] = None
        return as_object.tolist()
    if values.dtype.kind in _TEXT:
        return _strings(values)
    return values.tolist()


def _clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as JSON (numpy scalars to Python, NaN to None)."""

    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        return str(value)

    text = json.dumps(attrs, default=default)
    return json.loads(text, parse_constant=lambda _: None)


def _describe(variable: xr.DataArray) -> dict[str, Any]:
    dtype = "str" if variable.dtype.kind in "OUS" else str(variable.dtype)
    return {"dims": list(variable.dims), "dtype": dtype}


def dataset_to_json(ds: xr.Dataset) -> dict[str, Any]:
    """A computed query result as a JSON-able mapping (see the module docstring)."""
    ds = ds.compute()
    return {
        "attrs": _clean_attrs(dict(ds.attrs)),
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "coords": {str(k): {**_describe(v), "data": _json_values(v.values)} for k, v in ds.coords.items()},
        "data_vars": {str(k): {**_describe(v), "data": _json_values(v.values)} for k, v in ds.data_vars.items()},
    }


def _array(entry: dict[str, Any], sizes: dict[str, int] | None = None) -> np.ndarray:
    dtype = entry["dtype"]
    if dtype == "str":
        values = np.asarray(entry["data"], dtype=str)
    elif _dtype(dtype).kind == "f":
        values = np.asarray(entry["data"], dtype=np.float64).astype(dtype)  # null → NaN
    else:
        values = np.asarray(entry["data"], dtype=_dtype(dtype))
    if sizes is not None:  # an empty [perturbation, base] variable arrives as [] (shape (0,), not (0, 4))
        values = values.reshape([sizes[dim] for dim in entry["dims"]])
    return values


def dataset_from_json(data: dict[str, Any]) -> xr.Dataset:
    """Inverse of :func:`dataset_to_json`."""
    sizes = data.get("dims")
    coords = {name: (entry["dims"], _array(entry, sizes)) for name, entry in data["coords"].items()}
    data_vars = {name: (entry["dims"], _array(entry, sizes)) for name, entry in data["data_vars"].items()}
    return xr.Dataset(data_vars, coords=coords, attrs=data.get("attrs", {}))


def dataset_to_arrow(ds: xr.Dataset) -> bytes:
    """A computed query result as an Arrow IPC stream (see the module docstring)."""
    import pyarrow as pa

    ds = ds.compute()
    columns, names, variables, other = [], [], {}, {}
    for role, mapping in (("coord", ds.coords), ("data", ds.data_vars)):
        for name, variable in mapping.items():
            name = str(name)
            if ROW_DIM not in variable.dims:  # e.g. the base coordinate: a short list in the metadata
                other[name] = {**_describe(variable), "data": _json_values(variable.values)}
                continue
            if variable.dims[0] != ROW_DIM:
                variable = variable.transpose(ROW_DIM, ...)
            variables[name] = {**_describe(variable), "role": role, "shape": list(variable.shape[1:])}
            columns.append(_arrow_column(variable.values))
            names.append(name)
    meta = {"attrs": _clean_attrs(dict(ds.attrs)), "dims": {str(k): int(v) for k, v in ds.sizes.items()},
            "variables": variables, "other": other}
    schema = pa.schema([pa.field(n, c.type) for n, c in zip(names, columns)], metadata={_META_KEY: json.dumps(meta)})
    table = pa.Table.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _arrow_column(values: np.ndarray):
    import pyarrow as pa

    if values.dtype.kind in _TEXT:
        return pa.array(_strings(values), type=pa.string())
    if values.ndim == 1:
        return pa.array(values)
    width = int(math.prod(values.shape[1:]))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def dataset_from_arrow(payload: bytes) -> xr.Dataset:
    """Inverse of :func:`dataset_to_arrow`."""
    import pyarrow as pa

    reader = pa.ipc.open_stream(pa.py_buffer(payload))
    table = reader.read_all()
    meta = json.loads(table.schema.metadata[_META_KEY])
    n = table.num_rows
    coords: dict[str, Any] = {name: (entry["dims"], _array(entry)) for name, entry in meta["other"].items()}
    data_vars: dict[str, Any] = {}
    for name, entry in meta["variables"].items():
        column = table.column(name).combine_chunks()
        if entry["shape"]:
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(n, *entry["shape"])
        else:
            values = column.to_numpy(zero_copy_only=False)
        if entry["dtype"] == "str":
            values = np.asarray(values, dtype=str) if n else np.zeros(0, dtype=str)
        else:
            values = np.asarray(values).astype(_dtype(entry["dtype"]), copy=False)
        (coords if entry["role"] == "coord" else data_vars)[name] = (entry["dims"], values)
    return xr.Dataset(data_vars, coords=coords, attrs=meta["attrs"])
