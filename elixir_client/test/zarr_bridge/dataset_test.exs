defmodule ZarrBridge.DatasetTest do
  # xarray datasets both ways, through a real sidecar, with xarray itself on
  # the other side: groups written by Dataset.to_zarr (v2 and v3,
  # consolidated or not) open with their dims, coordinates, attributes and
  # CF-decoded values; groups ZarrBridge.Dataset.create writes open in
  # xarray.open_zarr with the same variables and decoded values.
  use ZarrBridge.Test.SidecarCase, async: true

  alias ZarrBridge.{Dataset, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 180_000

  defp tmp_dir do
    dir = Path.join(System.tmp_dir!(), "zb-dataset-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  defp python!(body, args) do
    (Python.prelude() <>
       """
       import xarray as xr, pandas as pd

       def plain(v):
           out = []
           for x in np.asarray(v).reshape(-1).tolist():
               if isinstance(x, float) and x != x:
                   out.append(None)
               else:
                   out.append(x)
           return out

       def values(var):
           a = var.values
           if a.dtype.kind == 'M':
               return [None if np.isnat(x) else str(x) for x in a.reshape(-1)]
           return plain(a)

       def describe(ds):
           return {
               'dims': {k: int(v) for k, v in ds.sizes.items()},
               'coords': sorted(ds.coords),
               'data_vars': sorted(ds.data_vars),
               'attrs': ds.attrs,
               'vars': {name: {'dims': list(v.dims), 'values': values(v), 'dtype': v.dtype.str,
                               'attrs': {k: (plain(x) if isinstance(x, np.ndarray) else x)
                                         for k, x in v.attrs.items()}}
                        for name, v in ds.variables.items()},
           }
       """ <> body)
    |> Python.run!(args)
    |> ZarrBridge.Test.JSON.decode!()
  end

  @xarray_writes """
  t = pd.date_range('2024-01-01', periods=4, freq='6h')
  temp = np.array([[1.5, np.nan, 3.25], [4, 5, 6], [7, 8, -9.75], [10, 11, 12]])
  ds = xr.Dataset(
      {'temp': (('time', 'x'), temp, {'units': 'K', 'long_name': 'temperature'}),
       'count': (('x',), np.array([1, 0, 3], 'i4')),
       'flag': (('time',), np.array([1, 255, 3, 255], 'u1'), {'missing_value': 255})},
      coords={'time': t, 'x': [10.0, 20.0, 30.0], 'lat': (('x',), np.array([1.0, 2.0, 3.0]))},
      attrs={'title': 'run 7', 'version': 3})
  ds['temp'].encoding = {'scale_factor': 0.25, 'add_offset': 100.0, 'dtype': 'i2', '_FillValue': -999}
  ds['time'].encoding = {'units': 'hours since 2024-01-01 00:00:00', 'dtype': 'i8'}
  ds['flag'].encoding = {'dtype': 'u1'}
  ds.to_zarr(sys.argv[1], zarr_format=int(sys.argv[2]), consolidated=sys.argv[3] == 'y')
  print(json.dumps(describe(xr.open_zarr(sys.argv[1], consolidated=sys.argv[3] == 'y'))))
  """

  defp to_json_values(values) do
    Enum.map(values, fn
      %DateTime{} = dt -> dt |> DateTime.to_naive() |> NaiveDateTime.to_iso8601()
      :nan -> nil
      x -> x
    end)
  end

  # numpy prints datetime64[ns] with nine fraction digits
  defp numpy_iso(iso), do: String.replace_suffix(iso, ".000000000", "")

  for format <- [2, 3], consolidated <- [true, false] do
    test "a dataset xarray wrote opens with dims, coords, attrs and decoded values (v#{format}, consolidated #{consolidated})" do
      sc = start_sidecar()
      dir = Path.join(tmp_dir(), "ds.zarr")

      want =
        python!(@xarray_writes, [
          dir,
          "#{unquote(format)}",
          if(unquote(consolidated), do: "y", else: "n")
        ])

      raw = Dataset.open!(path: dir, server: sc)
      assert raw.group.zarr_format == unquote(format)
      assert raw.dims == want["dims"]
      assert raw.coords == want["coords"]
      assert raw.coords == ["lat", "time", "x"]
      assert raw.data_vars == want["data_vars"]
      assert raw.attrs == want["attrs"]
      assert raw.variables["temp"].values == nil
      # what is stored: int16 counts of 0.25 around 100, -999 for the NaN
      assert NDArray.to_list(raw.variables["temp"].data) ==
               [-394, -999, -387, -384, -380, -376, -372, -368, -439, -360, -356, -352]

      assert raw.variables["temp"].attrs["scale_factor"] == 0.25
      assert raw.variables["temp"].encoding["_FillValue"] == -999
      assert NDArray.to_list(raw.variables["time"].data) == [0, 6, 12, 18]

      ds = Dataset.open!(path: dir, server: sc, decode: true)

      for {name, var} <- ds.variables do
        expected = want["vars"][name]
        assert var.dims == expected["dims"], name
        got = to_json_values(var.values)

        assert got ==
                 Enum.map(expected["values"], &if(is_binary(&1), do: numpy_iso(&1), else: &1)),
               name

        assert var.attrs ==
                 Map.drop(expected["attrs"], ["coordinates"])
                 |> Map.merge(Map.take(var.attrs, ["coordinates"])),
               name
      end

      assert [~U[2024-01-01 00:00:00Z], ~U[2024-01-01 06:00:00Z] | _] =
               ds.variables["time"].values

      assert Enum.at(ds.variables["temp"].values, 1) == nil
      assert ds.variables["flag"].values == [1, nil, 3, nil]
      assert ds.variables["temp"].encoding["scale_factor"] == 0.25
      refute Map.has_key?(ds.variables["temp"].attrs, "scale_factor")
      assert ds.variables["time"].encoding["units"] == "hours since 2024-01-01"

      nan = Dataset.open!(path: dir, server: sc, decode: true, mask: :nan)
      assert Enum.at(nan.variables["temp"].values, 1) == :nan
      assert nan.variables["flag"].values == [1, :nan, 3, :nan]

      no_times = Dataset.open!(path: dir, server: sc, decode: true, decode_times: false)
      assert no_times.variables["time"].values == [0, 6, 12, 18]
    end
  end

  defp elixir_dataset(dir, sc, format, consolidated) do
    Dataset.create(
      path: dir,
      server: sc,
      zarr_version: format,
      consolidated: consolidated,
      attrs: %{"title" => "from elixir", "n" => 2},
      coords: [
        {"time",
         %{
           dims: ["time"],
           data: [~U[2024-01-01 00:00:00Z], ~U[2024-01-01 06:00:00Z], nil],
           attrs: %{"standard_name" => "time"},
           encoding: [units: "hours since 2024-01-01"]
         }},
        {"x", %{dims: ["x"], data: [10.0, 20.0]}},
        {"lat", %{dims: ["x"], data: [1.5, 2.5]}},
        {"station", %{dims: [], data: NDArray.from_list!([7], {}, :int32)}}
      ],
      data_vars: [
        {"temp",
         %{
           dims: ["time", "x"],
           shape: {3, 2},
           data: [1.5, nil, 3.25, 4.0, -9.75, 12.0],
           attrs: %{"units" => "K"},
           encoding: [
             dtype: :int16,
             scale_factor: 0.25,
             add_offset: 100.0,
             fill_value: -999,
             chunks: {2, 1}
           ]
         }},
        {"rain", %{dims: ["time"], data: [0.5, :nan, 2.0]}},
        {"count", %{dims: ["x"], data: [0, 5]}},
        {"stamp",
         %{dims: ["x"], data: [~N[2024-05-01 12:00:00.250000], ~N[1969-12-31 23:59:59.000001]]}}
      ]
    )
  end

  for format <- [2, 3], consolidated <- [true, false] do
    test "a dataset Elixir wrote opens in xarray with the same variables and decoded values (v#{format}, consolidated #{consolidated})" do
      sc = start_sidecar()
      dir = Path.join(tmp_dir(), "out.zarr")
      assert {:ok, ds} = elixir_dataset(dir, sc, unquote(format), unquote(consolidated))

      got =
        python!(
          "print(json.dumps(describe(xr.open_zarr(sys.argv[1], consolidated=sys.argv[2] == 'y'))))",
          [dir, if(unquote(consolidated), do: "y", else: "n")]
        )

      assert got["dims"] == %{"time" => 3, "x" => 2}
      assert got["coords"] == ["lat", "station", "time", "x"]
      assert got["data_vars"] == ["count", "rain", "stamp", "temp"]
      assert got["attrs"] == %{"title" => "from elixir", "n" => 2}
      vars = got["vars"]

      assert vars["time"]["values"] == [
               "2024-01-01T00:00:00.000000000",
               "2024-01-01T06:00:00.000000000",
               nil
             ]

      assert vars["time"]["attrs"] == %{"standard_name" => "time"}
      assert vars["temp"]["dims"] == ["time", "x"]
      assert vars["temp"]["values"] == [1.5, nil, 3.25, 4.0, -9.75, 12.0]
      assert vars["temp"]["attrs"] == %{"units" => "K"}
      assert vars["rain"]["values"] == [0.5, nil, 2.0]
      assert vars["count"]["values"] == [0, 5]
      assert vars["count"]["dtype"] == "<i8"
      assert vars["lat"]["values"] == [1.5, 2.5]
      assert vars["station"] == %{"dims" => [], "values" => [7], "dtype" => "<i4", "attrs" => %{}}

      assert vars["stamp"]["values"] == [
               "2024-05-01T12:00:00.250000000",
               "1969-12-31T23:59:59.000001000"
             ]

      assert vars["x"]["values"] == [10.0, 20.0]

      # and what create returned is what open reads
      assert ds.coords == got["coords"]
      assert ds.data_vars == got["data_vars"]
      assert ds.variables["temp"].values == [1.5, nil, 3.25, 4.0, -9.75, 12.0]

      assert ds.variables["time"].values == [
               ~U[2024-01-01 00:00:00Z],
               ~U[2024-01-01 06:00:00Z],
               nil
             ]

      assert NDArray.to_list(ds.variables["temp"].data) == [-394, -999, -387, -384, -439, -352]
    end
  end

  test "a group that is not an xarray dataset, and CF attributes that cannot be decoded, are clear errors" do
    sc = start_sidecar()
    dir = tmp_dir()

    python!(
      """
      import zarr
      g = zarr.open_group(os.path.join(sys.argv[1], 'plain'), mode='w', zarr_format=2)
      g.create_array('a', shape=(3,), dtype='i4')
      ds = xr.Dataset({'v': (('t',), np.array([1, 2], 'i8'), {'units': 'days since 2000-01-01', 'calendar': 'noleap'})})
      ds.to_zarr(os.path.join(sys.argv[1], 'noleap'), zarr_format=3)
      ds = xr.Dataset({'v': (('t',), np.array([1, 2], 'i8'), {'units': 'fortnights since 2000-01-01'})})
      ds.to_zarr(os.path.join(sys.argv[1], 'units'), zarr_format=3)
      ds = xr.Dataset({'v': (('t',), np.array([1, 2], 'i8'), {'units': 'nanoseconds since 2000-01-01'})})
      ds.to_zarr(os.path.join(sys.argv[1], 'ns'), zarr_format=2)
      print('{}')
      """,
      [dir]
    )

    assert {:error, %Error{code: :invalid_metadata, message: msg}} =
             Dataset.open(path: Path.join(dir, "plain"), server: sc)

    assert msg =~ "_ARRAY_DIMENSIONS"

    assert {:error, %Error{code: :invalid_metadata, message: msg}} =
             Dataset.open(path: Path.join(dir, "noleap"), server: sc, decode: true)

    assert msg =~ "noleap"

    assert {:ok, ds} =
             Dataset.open(
               path: Path.join(dir, "noleap"),
               server: sc,
               decode: true,
               decode_times: false
             )

    assert ds.variables["v"].values == [1, 2]

    assert {:error, %Error{code: :invalid_metadata, message: msg}} =
             Dataset.open(path: Path.join(dir, "units"), server: sc, decode: true)

    assert msg =~ "fortnights"

    # 1 ns past a microsecond: refused, or truncated on request
    assert {:error, %Error{code: :invalid_params}} =
             Dataset.open(path: Path.join(dir, "ns"), server: sc, decode: true)

    assert {:ok, ds} =
             Dataset.open(
               path: Path.join(dir, "ns"),
               server: sc,
               decode: true,
               precision: :truncate
             )

    assert ds.variables["v"].values == [
             ~U[2000-01-01 00:00:00.000000Z],
             ~U[2000-01-01 00:00:00.000000Z]
           ]
  end

  test "create refuses what it cannot write faithfully, and writes nothing then" do
    sc = start_sidecar()
    dir = tmp_dir()
    at = fn name -> Path.join(dir, name) end

    assert {:error, %Error{code: :invalid_params, message: msg}} =
             Dataset.create(
               path: at.("a"),
               server: sc,
               data_vars: [{"v", %{dims: ["t"], data: [1, nil]}}]
             )

    assert msg =~ "fill_value"

    assert {:error, %Error{code: :invalid_metadata}} =
             Dataset.create(
               path: at.("b"),
               server: sc,
               data_vars: [
                 {"v", %{dims: ["t"], data: [1, 2]}},
                 {"w", %{dims: ["t"], data: [1, 2, 3]}}
               ]
             )

    assert {:error, %Error{code: :invalid_params, message: msg}} =
             Dataset.create(
               path: at.("c"),
               server: sc,
               coords: [
                 {"t",
                  %{
                    dims: ["t"],
                    data: [~U[2024-01-01 00:30:00Z]],
                    encoding: [units: "hours since 2024-01-01"]
                  }}
               ]
             )

    assert msg =~ "whole number"

    assert {:error, %Error{code: :invalid_params}} =
             Dataset.create(
               path: at.("d"),
               server: sc,
               data_vars: [{"v", %{dims: ["t", "u"], data: [1, 2]}}]
             )

    assert {:error, %Error{code: :invalid_params}} =
             Dataset.create(
               path: at.("e"),
               server: sc,
               data_vars: [{"v", %{dims: ["t"], data: [1]}}, {"v", %{dims: ["t"], data: [2]}}]
             )

    for name <- ~w(a b c d e), do: refute(File.exists?(at.(name)), name)
  end
end
