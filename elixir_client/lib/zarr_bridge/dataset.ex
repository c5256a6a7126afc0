defmodule ZarrBridge.Dataset do
  @moduledoc """
  xarray datasets in Zarr groups (v2 and v3): read what `Dataset.to_zarr`
  wrote, and write what `xarray.open_zarr` opens.

  A dataset is a group whose arrays are its **variables**. Each variable
  has **dimension names** (`dimension_names` in v3 metadata, the
  `_ARRAY_DIMENSIONS` attribute in v2), **attributes**, and data.
  **Coordinates** are the dimension coordinates (a 1-d variable named
  after its dimension) and the variables listed in a `coordinates`
  attribute (of a variable, or of the group); the rest are **data
  variables**. Subgroups are not part of a dataset and are ignored.

      {:ok, ds} = ZarrBridge.Dataset.open(path: "/data/weather.zarr", decode: true)
      ds.dims                                  #=> %{"time" => 4, "x" => 3}
      ds.coords                                #=> ["lat", "time", "x"]
      ds.variables["temp"].dims                #=> ["time", "x"]
      ds.variables["time"].values              #=> [~U[2024-01-01 00:00:00Z], ...]

  ## CF decoding (`decode: true`)

  As xarray's `decode_cf`, in this order:

    1. **masking**: elements equal to `_FillValue` (v3: the attribute, as
       xarray writes it, base64 for floats; v2: the array's `fill_value`)
       or to `missing_value` (a number or a list) become `nil`, or `:nan`
       with `mask: :nan`. A NaN fill masks the NaNs.
    2. **scaling**: with `scale_factor` and/or `add_offset`,
       `value * scale_factor + add_offset`, as a float.
    3. **times**: a variable whose `units` are `"<unit> since <date>"`
       (`days`, `hours`, `minutes`, `seconds`, `milliseconds`,
       `microseconds`, `nanoseconds`; the date as `2024-01-01`,
       `2024-01-01 06:00:00`, `2024-01-01T06:00:00Z`, with an optional
       `+hh:mm` offset) becomes `DateTime`s, through `ZarrBridge.Dates`
       (so a time Elixir cannot hold to the microsecond is refused unless
       `precision: :truncate`). Calendars `standard`, `gregorian` (from
       1582-10-15 on, where they agree with the proleptic one) and
       `proleptic_gregorian` are decoded; others are refused with
       `:invalid_metadata` (open with `decode_times: false` to get the
       numbers). Float-encoded times are rounded to the nanosecond.
       A variable with `units` such as `"hours"` and the attribute
       `dtype: "timedelta64[...]"` (xarray's timedelta encoding) becomes
       `{count, unit}` durations.

  The attributes consumed (`_FillValue`, `missing_value`, `scale_factor`,
  `add_offset`, time `units` and `calendar`) move from `attrs` to
  `encoding`, as in xarray. Without `decode: true`, `values` is `nil`,
  `attrs` holds every attribute but `_ARRAY_DIMENSIONS` and `_FillValue`
  (which is in `encoding`, with the other CF keys found), and `data` is
  what is stored.

  ## Variables

  `%ZarrBridge.Dataset.Variable{}`: `name`, `dims` (list of names), `shape`,
  `dtype` (stored), `data` (the stored `%ZarrBridge.NDArray{}`), `values`
  (decoded, a flat C-order list, or `nil`), `attrs`, `encoding`, and
  `array` (the `ZarrBridge.Array` handle).
  """

  import ZarrBridge.Dataset.CF,
    only: [
      cf_unit: 2,
      collect: 2,
      dim_sizes: 1,
      invalid_metadata: 2,
      parse_since: 2
    ]

  alias ZarrBridge.{Array, Dates, Dtype, Error, Group, NDArray}
  alias ZarrBridge.Dataset.{Variable, Writer}

  defstruct [:group, variables: %{}, coords: [], data_vars: [], dims: %{}, attrs: %{}]

  @type t :: %__MODULE__{
          group: Group.t(),
          variables: %{String.t() => Variable.t()},
          coords: [String.t()],
          data_vars: [String.t()],
          dims: %{String.t() => non_neg_integer},
          attrs: map
        }

  @open_keys [:decode, :decode_times, :mask, :precision]
  @cf_keys ["_FillValue", "missing_value", "scale_factor", "add_offset"]
  @nat -0x8000000000000000

  @gregorian_start ~N[1582-10-15 00:00:00]

  # ------------------------------------------------------------------
  # open

  @doc """
  Opens the dataset in the group at `path:`/`node:`.

  Options: `:storage`, `:path` (required), `:node`, `:server`, `:timeout`
  (as for `ZarrBridge.Group.open/1`; the group is opened read-only);
  `decode:` (default `false`: CF decoding, see the module doc);
  `decode_times:` (default `true`: with `decode: true`, also the times);
  `mask:` (`:nil`, the default, or `:nan`); `precision:` (`:exact` or
  `:truncate`, see `ZarrBridge.Dates`).

  Every variable's data is read. Errors: those of `ZarrBridge.Group.open/1`
  and `ZarrBridge.Array.read/2`; `:invalid_metadata` for a variable without
  dimension names, dimensions of two sizes, or CF attributes that cannot be
  decoded; `:invalid_params` for times Elixir cannot hold exactly.
  """
  @spec open(keyword) :: {:ok, t} | {:error, Error.t()}
  def open(opts) when is_list(opts) do
    {ds_opts, group_opts} = Keyword.split(opts, @open_keys)
    ds_opts = open_options!(ds_opts)
    call = Keyword.take(group_opts, [:timeout])

    with {:ok, group} <- Group.open(Keyword.put(group_opts, :mode, :r)),
         {:ok, members} <- Group.members(group, call),
         {:ok, variables} <- read_variables(group, members, call, ds_opts),
         {:ok, dims} <- dim_sizes(variables) do
      {coords, data_vars} = split_coords(variables, group.attributes)

      {:ok,
       %__MODULE__{
         group: group,
         variables: Map.new(variables, &{&1.name, &1}),
         coords: coords,
         data_vars: data_vars,
         dims: dims,
         attrs: Map.delete(group.attributes, "coordinates")
       }}
    end
  end

  @doc "Like `open/1`, but raises `ZarrBridge.Error`."
  @spec open!(keyword) :: t
  def open!(opts), do: bang(open(opts))

  defp open_options!(opts) do
    decode = Keyword.get(opts, :decode, false)
    mask = Keyword.get(opts, :mask, nil)
    precision = Keyword.get(opts, :precision, :exact)
    times = Keyword.get(opts, :decode_times, true)

    unless is_boolean(decode) and is_boolean(times),
      do: raise(ArgumentError, "decode: and decode_times: must be booleans")

    unless mask in [nil, :nan], do: raise(ArgumentError, "mask: must be :nil or :nan")

    unless precision in [:exact, :truncate],
      do: raise(ArgumentError, "precision: must be :exact or :truncate")

    %{decode: decode, mask: mask, precision: precision, times: times}
  end

  defp read_variables(group, members, call, opts) do
    members
    |> Enum.filter(fn {_name, kind} -> kind == :array end)
    |> collect(fn {name, _} ->
      with {:ok, array} <- Group.open_array(group, name, call),
           {:ok, nd} <- Array.read(array, call),
           do: variable(name, array, nd, opts)
    end)
  end

  defp variable(name, array, nd, opts) do
    meta = array.metadata
    attrs = meta.attributes

    with {:ok, dims} <- dims(name, meta) do
      encoding =
        attrs
        |> Map.take(@cf_keys ++ ["units", "calendar"])
        |> Map.merge(fill_encoding(meta, attrs))

      var = %Variable{
        name: name,
        dims: dims,
        shape: meta.shape,
        dtype: meta.dtype,
        data: nd,
        array: array,
        attrs: Map.drop(attrs, ["_ARRAY_DIMENSIONS", "_FillValue"]),
        encoding: encoding
      }

      if opts.decode, do: decode(var, opts), else: {:ok, var}
    end
  end

  defp dims(name, meta) do
    rank = tuple_size(meta.shape)

    names =
      case meta.dimension_names do
        names when is_list(names) ->
          if Enum.all?(names, &is_binary/1), do: names, else: meta.attributes["_ARRAY_DIMENSIONS"]

        nil ->
          meta.attributes["_ARRAY_DIMENSIONS"]
      end

    names = if rank == 0 and names == nil, do: [], else: names

    if is_list(names) and length(names) == rank and Enum.all?(names, &is_binary/1),
      do: {:ok, names},
      else:
        invalid_metadata(
          "variable #{inspect(name)} has no dimension names for its #{rank} axes " <>
            "(neither dimension_names nor _ARRAY_DIMENSIONS): not an xarray dataset",
          %{variable: name, dimension_names: names}
        )
  end

  # _FillValue: the attribute (v3, as xarray writes it), else v2's fill_value.
  defp fill_encoding(meta, attrs) do
    case Map.fetch(attrs, "_FillValue") do
      {:ok, value} ->
        %{"_FillValue" => attr_fill(value, meta.dtype)}

      :error when meta.zarr_format == 2 and meta.fill_value != nil ->
        %{"_FillValue" => meta.fill_value}

      :error ->
        %{}
    end
  end

  # xarray writes a float (or complex) _FillValue as the base64 of its
  # little-endian bytes in v3 attributes.
  defp attr_fill(value, dtype) when is_binary(value) do
    with true <- dtype in [:float16, :float32, :float64, :complex64, :complex128],
         {:ok, bytes} <- Base.decode64(value),
         true <- byte_size(bytes) == Dtype.itemsize(dtype) do
      hd(NDArray.decode(bytes, dtype))
    else
      _ -> named_float(value)
    end
  end

  defp attr_fill(value, _dtype), do: value

  defp named_float("NaN"), do: :nan
  defp named_float("Infinity"), do: :infinity
  defp named_float("-Infinity"), do: :neg_infinity
  defp named_float(other), do: other

  defp split_coords(variables, group_attrs) do
    names = MapSet.new(variables, & &1.name)

    listed =
      [group_attrs["coordinates"] | Enum.map(variables, & &1.attrs["coordinates"])]
      |> Enum.flat_map(&coordinate_names/1)

    coords =
      variables
      |> Enum.filter(&(&1.dims == [&1.name]))
      |> Enum.map(& &1.name)
      |> Enum.concat(Enum.filter(listed, &MapSet.member?(names, &1)))
      |> Enum.uniq()
      |> Enum.sort()

    {coords, names |> MapSet.difference(MapSet.new(coords)) |> Enum.sort()}
  end

  defp coordinate_names(value) when is_binary(value), do: String.split(value)
  defp coordinate_names(value) when is_list(value), do: Enum.filter(value, &is_binary/1)
  defp coordinate_names(_), do: []

  # ------------------------------------------------------------------
  # CF decoding

  defp decode(%Variable{} = var, opts) do
    enc = var.encoding

    with {:ok, raw} <- raw_values(var, opts) do
      decode_raw(var, raw, enc, opts)
    end
  end

  defp decode_raw(var, raw, enc, opts) do
    missing = missing_values(enc)
    time = if opts.times, do: time_kind(var), else: nil
    masked = if missing == [], do: raw, else: Enum.map(raw, &mask(&1, missing))
    scaled = scale(masked, enc["scale_factor"], enc["add_offset"])

    with {:ok, values} <- decode_time(scaled, time, var, opts) do
      placeholder = if time == nil and opts.mask == :nan, do: :nan, else: nil
      values = Enum.map(values, &if(&1 == :masked, do: placeholder, else: &1))
      consumed = consumed_keys(enc, time)

      {:ok,
       %Variable{
         var
         | values: values,
           attrs: Map.drop(var.attrs, consumed),
           encoding: Map.take(enc, consumed)
       }}
    end
  end

  defp raw_values(%Variable{dtype: {:datetime64, _}, data: nd}, opts),
    do: Dates.to_list(nd, precision: opts.precision)

  defp raw_values(%Variable{data: nd}, _opts), do: {:ok, NDArray.to_list(nd)}

  defp missing_values(enc) do
    [enc["_FillValue"] | List.wrap(enc["missing_value"])]
    |> Enum.reject(&is_nil/1)
  end

  defp mask(x, missing) do
    if Enum.any?(missing, &same?(x, &1)), do: :masked, else: x
  end

  defp same?(x, y) when is_number(x) and is_number(y), do: x == y
  defp same?(x, y), do: x === y

  defp scale(values, nil, nil), do: values

  defp scale(values, scale, offset) do
    s = scale || 1.0
    o = offset || 0.0
    Enum.map(values, &scale_one(&1, s, o))
  end

  defp scale_one(x, s, o) when is_number(x), do: x * s + o
  defp scale_one(x, _s, _o), do: x

  defp time_kind(%Variable{attrs: attrs, dtype: dtype}) do
    units = attrs["units"]

    cond do
      not is_binary(units) or Dtype.variable?(dtype) ->
        nil

      String.contains?(units, " since ") ->
        :datetime

      is_binary(attrs["dtype"]) and String.starts_with?(attrs["dtype"], "timedelta64") ->
        :timedelta

      true ->
        nil
    end
  end

  defp consumed_keys(enc, time) do
    base = Enum.filter(@cf_keys, &Map.has_key?(enc, &1))
    if time, do: base ++ ["units", "calendar", "dtype"], else: base
  end

  defp decode_time(values, nil, _var, _opts), do: {:ok, values}

  defp decode_time(values, :datetime, var, opts) do
    with {:ok, per, ref} <- parse_since(var.attrs["units"], var.name),
         :ok <- check_calendar(var.attrs["calendar"], var.name) do
      collect(values, &datetime_value(&1, per, ref, var, opts))
    end
  end

  defp decode_time(values, :timedelta, var, _opts) do
    with {:ok, _per, unit} <- cf_unit(var.attrs["units"], var.name) do
      {:ok, Enum.map(values, &timedelta_value(&1, unit))}
    end
  end

  defp timedelta_value(x, unit) when is_integer(x), do: {x, unit}
  defp timedelta_value(x, _unit), do: x

  defp datetime_value(:masked, _per, _ref, _var, _opts), do: {:ok, :masked}
  defp datetime_value(@nat, _per, _ref, _var, _opts), do: {:ok, :masked}

  defp datetime_value(x, per, ref, var, opts) when is_number(x) do
    ns = ref + if(is_integer(x), do: x * per, else: round(x * per))

    with {:ok, dt} <- Dates.to_datetime(ns, :ns, precision: opts.precision),
         :ok <- check_gregorian(dt, var) do
      {:ok, cf_precision(dt, per, ref)}
    else
      {:error, %Error{} = e} ->
        {:error, %Error{e | message: "variable #{inspect(var.name)}: " <> e.message}}
    end
  end

  defp datetime_value(x, _per, _ref, _var, _opts) when x in [:nan, nil], do: {:ok, :masked}

  defp datetime_value(x, _per, _ref, var, _opts),
    do: invalid_metadata("variable #{inspect(var.name)}: #{inspect(x)} is not a time", %{})

  # The DateTime's precision follows the units: seconds for "hours since
  # 2024-01-01", milliseconds for "milliseconds since ...", unless the
  # reference itself has a finer fraction.
  defp cf_precision(dt, per, ref) do
    cond do
      per >= 1_000_000_000 and rem(ref, 1_000_000_000) == 0 -> DateTime.truncate(dt, :second)
      per >= 1_000_000 and rem(ref, 1_000_000) == 0 -> DateTime.truncate(dt, :millisecond)
      true -> dt
    end
  end

  defp check_gregorian(dt, %Variable{attrs: %{"calendar" => cal}, name: name})
       when cal in ["standard", "gregorian"] do
    if NaiveDateTime.compare(DateTime.to_naive(dt), @gregorian_start) == :lt,
      do:
        invalid_metadata(
          "variable #{inspect(name)}: #{DateTime.to_iso8601(dt)} is before 1582-10-15, where the " <>
            "#{cal} calendar is Julian; open with decode_times: false",
          %{variable: name}
        ),
      else: :ok
  end

  defp check_gregorian(_dt, _var), do: :ok

  defp check_calendar(cal, _name)
       when cal in [nil, "standard", "gregorian", "proleptic_gregorian"],
       do: :ok

  defp check_calendar(cal, name),
    do:
      invalid_metadata(
        "variable #{inspect(name)}: calendar #{inspect(cal)} is not supported " <>
          "(standard, gregorian, proleptic_gregorian); open with decode_times: false",
        %{variable: name, calendar: cal}
      )

  # ------------------------------------------------------------------
  # create

  @doc """
  Writes a dataset that `xarray.open_zarr` opens with the same variables,
  dimensions, coordinates, attributes and decoded values, and returns it
  as `open(..., decode: true)` reads it back.

      ZarrBridge.Dataset.create(
        path: "/data/out.zarr",
        zarr_version: 3,
        attrs: %{"title" => "run 7"},
        coords: [
          {"time", %{dims: ["time"], data: [~U[2024-01-01 00:00:00Z], ~U[2024-01-01 06:00:00Z]],
                     encoding: [units: "hours since 2024-01-01"]}},
          {"x", %{dims: ["x"], data: [10.0, 20.0, 30.0]}}
        ],
        data_vars: [
          {"temp", %{dims: ["time", "x"], shape: {2, 3}, data: [1.5, nil, 3.0, 4.0, 5.0, 6.0],
                     attrs: %{"units" => "K"},
                     encoding: [dtype: :int16, scale_factor: 0.5, add_offset: 100.0, fill_value: -999]}}
        ]
      )

  Options: `:storage`, `:path` (required), `:node`, `:server`, `:timeout`;
  `zarr_version:` (`2` or `3`, default `3`); `mode:` (`:"w-"` default, or
  `:w` to overwrite); `attrs:` (the dataset's attributes); `coords:` and
  `data_vars:` (lists or maps of `{name, spec}`); `consolidated:` (default
  `true`: write consolidated metadata, as `to_zarr` does).

  A variable spec is a map with:

    * `dims:` (required) - the dimension names, one per axis;
    * `data:` (required) - a `%ZarrBridge.NDArray{}` (stored as it is: the
      values are already encoded) or a flat C-order list of values to
      encode: numbers (`nil`, `:nan` for missing ones), booleans, strings,
      or `DateTime`/`NaiveDateTime` (`nil` for NaT);
    * `shape:` - required for a list of more than one dimension;
    * `attrs:` - a map of attributes;
    * `encoding:` - a keyword list: `dtype:` (the stored dtype; default
      `:int64` for integers, `:float64` for floats, `:bool`, `:string`),
      `scale_factor:`, `add_offset:` (the list is stored as
      `(value - add_offset) / scale_factor`, rounded for an integer dtype),
      `fill_value:` (the `_FillValue`; `nil` elements are stored as it;
      default NaN for floats), `units:` and `calendar:` for times (default
      `"seconds since 1970-01-01 00:00:00"`, or microseconds when a value
      has them; `proleptic_gregorian`), `chunks:`, `compressor:`.

  Each data variable gets a `coordinates` attribute naming the non-dimension
  coordinates whose dimensions it has; the others are listed in the
  group's. Errors: `:invalid_params` (a spec or value that does not fit,
  a dimension with two sizes, a time not a whole number of `units`), and
  those of `ZarrBridge.Group.create/1` and `ZarrBridge.Array.write/3`.
  """
  @spec create(keyword) :: {:ok, t} | {:error, Error.t()}
  def create(opts) when is_list(opts) do
    with {:ok, where} <- Writer.write(opts), do: open(where ++ [decode: true])
  end

  @doc "Like `create/1`, but raises `ZarrBridge.Error`."
  @spec create!(keyword) :: t
  def create!(opts), do: bang(create(opts))
  # ------------------------------------------------------------------

  defp bang({:ok, value}), do: value
  defp bang({:error, error}), do: raise(error)
end
