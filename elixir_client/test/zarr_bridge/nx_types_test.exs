defmodule ZarrBridge.NxTypesTest do
  # The Nx type mapping and byte layout (ZarrBridge.Nx.Types), without Nx:
  # arrays numpy wrote in every dtype Nx has (C and F order, big- and
  # little-endian on disk) are read through a real sidecar, and the bytes
  # given for Nx.from_binary/3 are compared with numpy's own C-order bytes
  # in both byte orders.
  use ZarrBridge.Test.SidecarCase, async: true

  alias ZarrBridge.{Array, NDArray}
  alias ZarrBridge.Nx.Types
  alias ZarrBridge.Test.Python

  @moduletag timeout: 120_000

  @mapping [
    int8: {:s, 8},
    int16: {:s, 16},
    int32: {:s, 32},
    int64: {:s, 64},
    uint8: {:u, 8},
    uint16: {:u, 16},
    uint32: {:u, 32},
    uint64: {:u, 64},
    float16: {:f, 16},
    float32: {:f, 32},
    float64: {:f, 64},
    complex64: {:c, 64},
    complex128: {:c, 128},
    bool: {:u, 8}
  ]

  defp tmp_dir do
    dir = Path.join(System.tmp_dir!(), "zb-nxtypes-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  test "every dtype Nx has maps exactly, both ways" do
    for {dtype, type} <- @mapping do
      assert Types.nx_type(dtype) == {:ok, type}
      if dtype != :bool, do: assert(Types.dtype(type) == {:ok, dtype})
    end

    assert Types.dtype({:u, 8}) == {:ok, :uint8}
    assert Enum.sort(Types.dtypes()) == Enum.sort(Keyword.keys(@mapping))
  end

  test "the other dtypes and Nx types are refused by name" do
    for dtype <- [
          {:datetime64, :ns},
          {:timedelta64, :s},
          :string,
          :bytes,
          {:fixed_bytes, 4},
          {:fixed_unicode, 2},
          [{"x", :int32}, {"y", :float64}]
        ] do
      assert {:error, %Error{code: :unsupported_dtype, message: msg}} = Types.nx_type(dtype)
      assert msg =~ inspect(dtype)
    end

    assert {:error, %Error{message: msg}} = Types.nx_type({:datetime64, :ns})
    assert msg =~ "ZarrBridge.Dates"

    for type <- [{:bf, 16}, {:s, 4}, {:u, 2}, {:f, 8}, :float32] do
      assert {:error, %Error{code: :unsupported_dtype, message: msg}} = Types.dtype(type)
      assert msg =~ inspect(type)
    end
  end

  test "numpy-written arrays give numpy's C-order bytes in both byte orders" do
    sc = start_sidecar()
    dir = tmp_dir()

    script =
      Python.prelude() <>
        """
        rng = np.random.default_rng(7)
        out = {}
        names = ['int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
                 'float16', 'float32', 'float64', 'complex64', 'complex128', 'bool']
        for name in names:
            for fmt, order, bo in [(3, 'C', '<'), (2, 'F', '>'), (2, 'C', '<')]:
                dt = np.dtype(name)
                if dt.kind in 'iu':
                    info = np.iinfo(dt)
                    a = rng.integers(info.min, info.max, size=(2, 3, 4), dtype=dt, endpoint=True)
                    a.flat[0] = info.min
                    a.flat[1] = info.max
                elif dt.kind == 'b':
                    a = rng.integers(0, 2, size=(2, 3, 4)).astype(bool)
                else:
                    a = rng.standard_normal((2, 3, 4)).astype(dt)
                    if dt.kind == 'c':
                        a = a + 1j * rng.standard_normal((2, 3, 4)).astype(dt)
                        a.flat[0] = complex(np.nan, np.inf)
                    else:
                        a.flat[0] = np.nan
                        a.flat[1] = -np.inf
                key = f'{name}-{fmt}{order}'
                kw = {'order': order} if fmt == 2 else {}
                z = zarr.create_array(os.path.join(sys.argv[1], key), shape=a.shape, chunks=(1, 2, 3),
                                      dtype=dt.newbyteorder(bo) if dt.itemsize > 1 else dt,
                                      zarr_format=fmt, **kw)
                z[...] = a
                c = np.ascontiguousarray(a)
                u8 = c.astype(np.uint8) if dt.kind == 'b' else c
                out[key] = [name, u8.astype(u8.dtype.newbyteorder('<')).tobytes().hex(),
                            u8.astype(u8.dtype.newbyteorder('>')).tobytes().hex(), list(a.shape)]
        print(json.dumps(out))
        """

    cases = script |> Python.run!([dir]) |> ZarrBridge.Test.JSON.decode!()
    assert map_size(cases) == 3 * length(@mapping)

    for {key, [name, little, big, shape]} <- cases do
      dtype = String.to_existing_atom(name)
      nd = Array.read!(ZarrBridge.open!(path: Path.join(dir, key), server: sc))
      assert nd.dtype == dtype
      {:ok, type} = Types.nx_type(dtype)

      assert {:ok, %{type: ^type, shape: {2, 3, 4}, binary: bin_le}} =
               Types.to_layout(nd, :little)

      assert List.to_tuple(shape) == {2, 3, 4}
      assert Base.encode16(bin_le, case: :lower) == little, key
      assert {:ok, %{binary: bin_be}} = Types.to_layout(nd, :big)
      assert Base.encode16(bin_be, case: :lower) == big, key
      assert {:ok, %{binary: ^bin_le}} = Types.to_layout(nd)

      # back from what a tensor would give, in either byte order
      back_dtype = if dtype == :bool, do: :uint8, else: dtype

      assert {:ok, %NDArray{dtype: ^back_dtype, shape: {2, 3, 4}, data: ^bin_le}} =
               Types.from_layout(type, {2, 3, 4}, bin_be, :big)

      assert {:ok, back} = Types.from_layout(type, {2, 3, 4}, bin_le, :little)
      assert {:ok, fitted} = Types.fit(back, dtype)
      assert fitted.dtype == dtype
      if dtype != :bool, do: assert(fitted == nd)
    end
  end

  test "bool bytes become exactly 0 and 1; a u8 tensor fits a bool array only when it is 0/1" do
    {:ok, nd} = NDArray.new(<<0, 1, 7, 255>>, {2, 2}, :bool)
    assert {:ok, %{type: {:u, 8}, binary: <<0, 1, 1, 1>>}} = Types.to_layout(nd)

    assert {:ok, %NDArray{dtype: :bool}} =
             Types.fit(NDArray.new!(<<0, 1, 1>>, {3}, :uint8), :bool)

    assert {:error, %Error{code: :invalid_params}} =
             Types.fit(NDArray.new!(<<0, 2>>, {2}, :uint8), :bool)

    assert {:ok, %NDArray{dtype: :uint8}} = Types.fit(NDArray.new!(<<0, 2>>, {2}, :uint8), :int8)
  end

  test "scalars and empty arrays keep their shape; a wrong byte count is refused" do
    {:ok, nd} = NDArray.from_list([3.5], {}, :float64)
    assert {:ok, %{shape: {}, binary: <<3.5::float-little-64>>}} = Types.to_layout(nd, :little)
    assert {:ok, %{binary: <<3.5::float-big-64>>}} = Types.to_layout(nd, :big)

    {:ok, empty} = NDArray.from_list([], {0, 5}, :int32)
    assert {:ok, %{shape: {0, 5}, binary: <<>>}} = Types.to_layout(empty)

    assert {:error, %Error{code: :data_size_mismatch}} =
             Types.from_layout({:s, 32}, {2}, <<1, 2, 3>>, :little)

    bad = %NDArray{data: <<1, 2, 3>>, shape: {2}, dtype: :int16}
    assert {:error, %Error{code: :data_size_mismatch}} = Types.to_layout(bad)
  end

  test "a string array read from the sidecar is refused by name" do
    sc = start_sidecar()
    dir = tmp_dir()
    a = ZarrBridge.create!(path: dir, server: sc, shape: {2}, dtype: :string)
    :ok = Array.write(a, NDArray.new!(["a", "b"], {2}, :string))

    assert {:error, %Error{code: :unsupported_dtype, message: msg}} =
             Types.to_layout(Array.read!(a))

    assert msg =~ ":string"
  end
end
