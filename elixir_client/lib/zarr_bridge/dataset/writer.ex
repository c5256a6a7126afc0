defmodule ZarrBridge.Dataset.Writer do
  @moduledoc false
  # ZarrBridge.Dataset.create/1 without the read back: encodes the variables
  # (CF), creates the group and its arrays, consolidates; answers the options
  # that open the dataset again.

  import ZarrBridge.Dataset.CF,
    only: [collect: 2, dim_sizes: 1, invalid_params: 2, parse_since: 2]

  alias ZarrBridge.{Array, Dates, Dtype, Error, Group, NDArray}
  alias ZarrBridge.Dataset.Variable

  @nat -0x8000000000000000

  @doc false
  @spec write(keyword) :: {:ok, keyword} | {:error, Error.t()}
  def write(opts) when is_list(opts) do
    {spec, where} =
      Keyword.split(opts, [:attrs, :coords, :data_vars, :consolidated, :zarr_version, :mode])

    format = Keyword.get(spec, :zarr_version, 3)
    coords = Enum.to_list(Keyword.get(spec, :coords, []))
    data_vars = Enum.to_list(Keyword.get(spec, :data_vars, []))
    call = Keyword.take(where, [:server, :timeout])

    with {:ok, encoded} <- collect(coords ++ data_vars, &encode_variable(&1, format)),
         :ok <- check_names(encoded),
         {:ok, _dims} <- dim_sizes(Enum.map(encoded, & &1.var)),
         {group_coords, var_coords} = coordinate_attrs(encoded, Enum.map(coords, &elem(&1, 0))),
         group_attrs = put_coordinates(Keyword.get(spec, :attrs, %{}), group_coords),
         {:ok, group} <-
           Group.create(
             where ++
               [
                 zarr_version: format,
                 attributes: group_attrs,
                 mode: Keyword.get(spec, :mode, :"w-")
               ]
           ),
         :ok <- write_variables(group, encoded, var_coords, format, call),
         :ok <- consolidate(Keyword.get(spec, :consolidated, true), where) do
      {:ok, Keyword.take(where, [:node, :server, :timeout | ZarrBridge.Store.keys()])}
    end
  end

  defp consolidate(false, _where), do: :ok

  defp consolidate(true, where) do
    with {:ok, _} <-
           ZarrBridge.consolidate_metadata(
             Keyword.take(where, [:node, :server, :timeout | ZarrBridge.Store.keys()])
           ),
         do: :ok
  end

  defp check_names(encoded) do
    names = Enum.map(encoded, & &1.var.name)

    case names -- Enum.uniq(names) do
      [] -> :ok
      [dup | _] -> invalid_params("variable #{inspect(dup)} is given twice", %{variable: dup})
    end
  end

  # data vars: their coordinates attribute; the group: the coords no data var lists.
  defp coordinate_attrs(encoded, coord_names) do
    non_dim = for %{var: v} <- encoded, v.name in coord_names, v.dims != [v.name], do: v

    var_coords =
      for %{var: v} <- encoded, v.name not in coord_names, into: %{} do
        {v.name, for(c <- non_dim, Enum.all?(c.dims, &(&1 in v.dims)), do: c.name)}
      end

    used = var_coords |> Map.values() |> List.flatten() |> MapSet.new()
    {for(c <- non_dim, not MapSet.member?(used, c.name), do: c.name), var_coords}
  end

  defp put_coordinates(attrs, []), do: attrs
  defp put_coordinates(attrs, names), do: Map.put(attrs, "coordinates", Enum.join(names, " "))

  defp write_variables(group, encoded, var_coords, format, call) do
    encoded
    |> collect(fn %{var: v, nd: nd, fill: fill, extra: extra, array_opts: array_opts} ->
      attrs =
        v.attrs
        |> Map.merge(extra)
        |> put_coordinates(Map.get(var_coords, v.name, []))
        |> put_dims(v.dims, format)
        |> put_attr_fill(fill, nd.dtype, format)

      create_opts =
        [shape: nd.shape, dtype: nd.dtype, attributes: attrs, fill_value: fill] ++
          if(format == 3, do: [dimension_names: v.dims], else: []) ++
          [zarr_version: format] ++ array_opts ++ call

      with {:ok, array} <- Group.create_array(group, v.name, create_opts),
           :ok <- Array.write(array, nd, Keyword.take(call, [:timeout])),
           do: {:ok, v.name}
    end)
    |> case do
      {:ok, _} -> :ok
      error -> error
    end
  end

  defp put_dims(attrs, dims, 2), do: Map.put(attrs, "_ARRAY_DIMENSIONS", dims)
  defp put_dims(attrs, _dims, 3), do: attrs

  # v3 keeps _FillValue in the attributes (floats as base64, as xarray does);
  # v2 in the array's fill_value.
  defp put_attr_fill(attrs, nil, _dtype, _format), do: attrs
  defp put_attr_fill(attrs, _fill, _dtype, 2), do: attrs

  defp put_attr_fill(attrs, fill, dtype, 3) do
    if dtype in [:float16, :float32, :float64, :complex64, :complex128],
      do: Map.put(attrs, "_FillValue", Base.encode64(NDArray.from_list!([fill], {}, dtype).data)),
      else: Map.put(attrs, "_FillValue", fill)
  end

  defp encode_variable({name, spec}, _format) when is_binary(name) and is_map(spec) do
    with {:ok, dims} <- spec_dims(name, spec),
         {:ok, encoding} <- spec_encoding(name, spec),
         {:ok, nd, fill, extra} <- encode_data(name, spec[:data], spec, encoding),
         :ok <- check_rank(name, dims, nd.shape) do
      array_opts = Keyword.take(encoding, [:chunks, :compressor])

      {:ok,
       %{
         var: %Variable{
           name: name,
           dims: dims,
           shape: nd.shape,
           dtype: nd.dtype,
           attrs: Map.get(spec, :attrs, %{})
         },
         nd: nd,
         fill: fill,
         extra: extra,
         array_opts: array_opts
       }}
    end
  end

  defp encode_variable(other, _format),
    do:
      invalid_params(
        "a variable must be {name, %{dims: ..., data: ...}}, got #{inspect(other, limit: 5)}",
        %{}
      )

  defp spec_dims(name, spec) do
    case spec[:dims] do
      dims when is_list(dims) ->
        if Enum.all?(dims, &is_binary/1),
          do: {:ok, dims},
          else:
            invalid_params("variable #{inspect(name)}: dims must be strings", %{variable: name})

      _ ->
        invalid_params("variable #{inspect(name)} needs dims: [names]", %{variable: name})
    end
  end

  defp spec_encoding(name, spec) do
    enc = Map.get(spec, :encoding, [])
    enc = if is_map(enc), do: Enum.to_list(enc), else: enc

    allowed = [
      :dtype,
      :scale_factor,
      :add_offset,
      :fill_value,
      :units,
      :calendar,
      :chunks,
      :compressor
    ]

    case Keyword.keys(enc) -- allowed do
      [] ->
        {:ok, enc}

      bad ->
        invalid_params("variable #{inspect(name)}: unknown encoding keys #{inspect(bad)}", %{
          variable: name
        })
    end
  end

  defp check_rank(name, dims, shape) do
    if length(dims) == tuple_size(shape),
      do: :ok,
      else:
        invalid_params(
          "variable #{inspect(name)} has #{length(dims)} dims for a shape of rank #{tuple_size(shape)}",
          %{variable: name}
        )
  end

  # An NDArray is stored as it is, with the encoding attributes given.
  defp encode_data(_name, %NDArray{} = nd, _spec, enc) do
    {:ok, nd, Keyword.get(enc, :fill_value, default_fill(nd.dtype)), cf_attrs(enc)}
  end

  defp encode_data(name, list, spec, enc) when is_list(list) do
    shape = Map.get(spec, :shape, {length(list)})

    cond do
      Enum.any?(list, &(is_struct(&1, DateTime) or is_struct(&1, NaiveDateTime))) ->
        encode_times(name, list, shape, enc)

      true ->
        encode_numbers(name, list, shape, enc)
    end
  end

  defp encode_data(name, _other, _spec, _enc),
    do:
      invalid_params("variable #{inspect(name)} needs data: an NDArray or a list", %{
        variable: name
      })

  defp cf_attrs(enc) do
    for {key, attr} <- [
          scale_factor: "scale_factor",
          add_offset: "add_offset",
          units: "units",
          calendar: "calendar"
        ],
        Keyword.has_key?(enc, key),
        into: %{},
        do: {attr, Keyword.fetch!(enc, key)}
  end

  defp default_fill(dtype) when dtype in [:float16, :float32, :float64], do: :nan
  defp default_fill(_dtype), do: nil

  defp encode_times(name, list, shape, enc) do
    units =
      Keyword.get_lazy(enc, :units, fn ->
        if Enum.all?(list, &(is_nil(&1) or elem(&1.microsecond, 0) == 0)),
          do: "seconds since 1970-01-01 00:00:00",
          else: "microseconds since 1970-01-01 00:00:00"
      end)

    with {:ok, per, ref} <- parse_since(units, name),
         {:ok, counts} <- collect(list, &time_count(&1, per, ref, name, units)),
         {:ok, nd} <- NDArray.from_list(counts, shape, :int64) do
      fill = if nil in list, do: @nat, else: nil

      attrs = %{
        "units" => units,
        "calendar" => Keyword.get(enc, :calendar, "proleptic_gregorian")
      }

      {:ok, nd, fill, attrs}
    end
  end

  defp time_count(nil, _per, _ref, _name, _units), do: {:ok, @nat}

  defp time_count(dt, per, ref, name, units) do
    with {:ok, ns} <- Dates.from_datetime(dt, :ns) do
      delta = ns - ref

      if rem(delta, per) == 0,
        do: {:ok, div(delta, per)},
        else:
          invalid_params(
            "variable #{inspect(name)}: #{inspect(dt)} is not a whole number of #{inspect(units)}",
            %{variable: name, value: dt}
          )
    end
  end

  defp encode_numbers(name, list, shape, enc) do
    scale = Keyword.get(enc, :scale_factor)
    offset = Keyword.get(enc, :add_offset)
    dtype = Keyword.get_lazy(enc, :dtype, fn -> infer_dtype(list, scale || offset) end)

    with {:ok, dtype} <- Dtype.normalize(dtype) do
      fill = Keyword.get(enc, :fill_value, default_fill(dtype))
      int? = dtype in [:int8, :int16, :int32, :int64, :uint8, :uint16, :uint32, :uint64]

      if Enum.any?(list, &is_nil/1) and fill == nil do
        invalid_params(
          "variable #{inspect(name)} has nil values but no fill_value to store them as",
          %{variable: name}
        )
      else
        stored = Enum.map(list, &encode_number(&1, scale, offset, int?, fill))

        with {:ok, nd} <- NDArray.from_list(stored, shape, dtype) do
          {:ok, nd, fill, cf_attrs(enc)}
        end
      end
    end
  end

  defp encode_number(nil, _s, _o, _int?, fill), do: fill

  defp encode_number(x, s, o, int?, _fill) when is_number(x) and (s != nil or o != nil) do
    y = (x - (o || 0)) / (s || 1)
    if int?, do: round(y), else: y
  end

  defp encode_number(x, _s, _o, _int?, _fill), do: x

  defp infer_dtype(list, scaled) do
    cond do
      scaled ->
        :float64

      Enum.all?(list, &is_boolean/1) ->
        :bool

      Enum.all?(list, &(is_integer(&1) or is_nil(&1))) and Enum.any?(list, &is_integer/1) ->
        :int64

      Enum.any?(list, &is_binary/1) ->
        :string

      true ->
        :float64
    end
  end
end
